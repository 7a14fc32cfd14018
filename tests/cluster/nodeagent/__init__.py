"""TEST INFRASTRUCTURE, not product code: a node agent that plays kubelet + scheduler.

The cluster tests run the real kube-apiserver, kube-controller-manager and Argo workflow-controller
on 127.0.0.1, but there is no container runtime on the test machines. This package fills the gap:
it registers Node objects shaped like the Karpenter pools in ``k8s/cluster/karpenter/``, binds
pending pods that fit them (nodeSelector, node affinity, taints/tolerations, requests), and runs
each bound pod's containers as processes on this machine -- the image is ignored, ``vcube`` is the
repo venv's, ``argoexec`` is the real binary built from Argo's source. Each container gets its own
mount and PID namespaces with the pod's volumes bind-mounted at their mount paths and its
ServiceAccount token at the standard path, and its state is reported like a kubelet would.

Nothing under ``src/`` may import this. See README.md here for what is real and what is mocked.
"""
