//! The kube-scheduler extender.
