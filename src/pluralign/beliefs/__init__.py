"""The beliefs layer, below both training and evaluation.

* :mod:`~pluralign.beliefs.formats`: sequence formats (how prompt, belief marker,
  description and response are laid out) and their registry;
* :mod:`~pluralign.beliefs.tokenize`: records to token ids with exact offsets;
* :mod:`~pluralign.beliefs.shots`: leak-free few-shot contexts (ICF, k-shot);
* :mod:`~pluralign.beliefs.readout`: per-token log-probs and belief distributions
  read from a model;
* :mod:`~pluralign.beliefs.distances`: distribution checks and the JSD core;
* :mod:`~pluralign.beliefs.margin_groups`: reward margins split by the paper's
  subsets of pairs.

``pluralign.train`` and ``pluralign.eval`` both build on this package and never
import each other. Submodules are imported on demand (this file imports nothing),
so reading a format does not load torch.
"""
