"""Hera definitions of the Argo Workflows objects that run vcube on Kubernetes.

Importing this package has no side effects: ``workflows.template`` builds objects when called,
``workflows.render`` writes YAML (``make render``), ``workflows.submit`` submits (``make submit``).
"""
