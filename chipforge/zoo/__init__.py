"""The bundled model zoo: small compressed models trained on scikit-learn's digits data set.

Each model ships as a small ``.npz`` graph (no pickle) next to this file and is reproducible
from its recipe (``chipforge zoo train NAME``). :mod:`chipforge.zoo.data` loads the data.
"""
