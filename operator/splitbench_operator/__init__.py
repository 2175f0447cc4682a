"""The splitbench Kubernetes operator: an Experiment custom resource becomes the pods of its
roles. Layered as kopf suggests: `builders` are pure functions from an Experiment to the
Kubernetes objects it needs (tested without a cluster); handlers apply them."""
