"""One script per figure or table of the papers, each run as ``python -m experiments.<name>``
(``--config small|full``, ``--set KEY=VALUE``); see experiments/README.md."""
