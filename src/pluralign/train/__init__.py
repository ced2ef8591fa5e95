"""Training: tokenisation of group preference records, loss functions and trainers.

Submodules are imported on demand (``pluralign.train.tokenize``,
``pluralign.train.losses``) so that importing this package stays light.
"""
