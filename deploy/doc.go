// Package deploy holds the tests of ttftlab's deployment files: the Helm
// chart (deploy/helm/ttftlab), the manifests rendered from it
// (deploy/manifests), the Slurm batch script (deploy/slurm) and the Compose
// file (deploy/compose.yaml). It is its own Go module so that the main
// module does not carry the Kubernetes API types.
package deploy
