"""Running lepton_keras on the cluster engines users already have.

- `lepton_keras.integrations.ray`: Ray Train (`pip install "lepton_keras[ray]"`).

Kubernetes (Kubeflow's TFJob) and Slurm need no module: they start the workers and set their
cluster (TF_CONFIG, or Slurm's variables for `get_strategy(cluster_resolver=...)`); see the
README's "Cluster engines" section and `tutorials/kubernetes/`, `tutorials/slurm/`.
Nothing here is imported by `import lepton_keras`, so an engine's package is needed only by
the code that uses it.
"""
