"""Hera definitions of the Argo Workflows objects that run vcube on Kubernetes.

Importing this package has no side effects: ``workflows.build`` (the parent ``vcube-build``),
``workflows.group`` (``vcube-build-group`` and the child a build applies per group) and
``workflows.parts`` (what both are made of) build objects when called, ``workflows.render``
writes YAML (``make render``), ``workflows.submit`` submits (``make submit``).
"""
