//! kennel's sessions on a Kubernetes cluster: the Pod a Plan makes
//! ([`pod`]) and the cluster it runs on ([`cluster`], through kube-rs).
//!
//! The cluster is a remote machine to kennel: the Pod cannot bind-mount the
//! user's checkout or kennel's sockets, so what it needs is sent to it, and
//! what it cannot have is said, never dropped in silence.

pub mod pod;
pub mod sandbox;
pub mod tree;

pub use pod::{
    DEFAULT_HOME_SIZE, HomeVolume, PodError, PodSettings, SessionPod, is_size, object_name,
    pod_for, waiting_pod_for,
};
pub mod cluster;

pub use cluster::{
    Cluster, ClusterError, ClusterSettings, Ended, Executed, PodState, Workload, exit_code,
};
pub use kube::api::{AttachedProcess, TerminalSize};
pub use tree::{Tree, TreeError, tar_of};
