"""pwdeploy: fairness-preserving structured pruning and edge deployment.

Importing the package is light on purpose (no torch): the device-side verifier runs where only numpy and a
runtime exist. Heavy modules are imported by the code that needs them.
"""

__version__ = "0.1.0"
