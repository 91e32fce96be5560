"""Reporting: metric logging and episodes.csv (``logging``), the progress line (``progress``), return curves
(``plots``) and the open-loop video report (``report``)."""

#: The metric logger backends (``logger.backend``).
BACKENDS = ("csv", "tensorboard", "wandb", "none")
