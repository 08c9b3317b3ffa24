"""The product's decision rule, below inference and evaluation: the open-set scores and the
UNKNOWN rule (``openset``), the certified auto-accept bound and the conformal prediction sets
(``conformal``), and the policy that bundles them (``policy``). Evaluation fits it; the
predictor, scoring and the dashboard apply it. Imports numpy, scipy and scikit-learn only."""
