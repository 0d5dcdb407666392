"""The evaluation study: the ablation (component isolation, KL-threshold sweep, momentum sweep), its metrics
(CLIP score, FID, frame consistency and motion, or offline digit-classifier scores for the embedded model),
Inception FID, the report, and the ``zs2-ablate`` command line. Nothing in the sampling core imports this."""
