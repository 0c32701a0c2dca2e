//! agent-sandbox's `Sandbox` (`agents.x-k8s.io/v1beta1`, kubernetes-sigs/
//! agent-sandbox): where a cluster has it, a session's Pod is made by its
//! controller from a Sandbox that owns it, so that the cluster's own tools
//! for agent sandboxes (their quotas, their views, their policies) see
//! kennel's sessions as what they are.
//!
//! The Sandbox carries the very Pod spec and labels kennel would have made
//! itself; its controller names the Pod after the Sandbox. kennel deletes
//! the Sandbox before the Pod (a Pod deleted under a live Sandbox is made
//! again by its controller).

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta};

use k8s_openapi::api::core::v1::Pod;

/// The API group and version kennel speaks.
pub const GROUP: &str = "agents.x-k8s.io";
pub const VERSION: &str = "v1beta1";
pub const KIND: &str = "Sandbox";
pub const PLURAL: &str = "sandboxes";

/// The Sandbox resource, for a dynamic [`kube::Api`].
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

/// The Sandbox whose controller makes `pod`: the same name, labels and
/// annotations, the Pod's as its template, running.
pub fn sandbox_for(pod: &Pod) -> DynamicObject {
    let mut sandbox = DynamicObject::new(
        pod.metadata.name.as_deref().unwrap_or_default(),
        &api_resource(),
    );
    sandbox.metadata = ObjectMeta {
        name: pod.metadata.name.clone(),
        labels: pod.metadata.labels.clone(),
        annotations: pod.metadata.annotations.clone(),
        ..Default::default()
    };
    sandbox.data = serde_json::json!({
        "spec": {
            "podTemplate": {
                "metadata": {
                    "labels": pod.metadata.labels.clone().unwrap_or_default(),
                    "annotations": pod.metadata.annotations.clone().unwrap_or_default(),
                },
                "spec": pod.spec.clone().unwrap_or_default(),
            },
            "operatingMode": "Running",
        }
    });
    sandbox
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_carries_the_pod_as_its_template() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "kennel-shell-ws-0a1b",
                "labels": {"app.kubernetes.io/managed-by": "kennel", "dev.kennel.pod": "kennel-shell-ws-0a1b"},
                "annotations": {"dev.kennel.workspace": "/home/alice/repo"},
            },
            "spec": {
                "containers": [{"name": "agent", "image": "kennel/shell:1"}],
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
            },
        }))
        .expect("a Pod");
        let sandbox = serde_json::to_value(sandbox_for(&pod)).expect("JSON");
        insta::assert_json_snapshot!(sandbox, @r#"
        {
          "apiVersion": "agents.x-k8s.io/v1beta1",
          "kind": "Sandbox",
          "metadata": {
            "annotations": {
              "dev.kennel.workspace": "/home/alice/repo"
            },
            "labels": {
              "app.kubernetes.io/managed-by": "kennel",
              "dev.kennel.pod": "kennel-shell-ws-0a1b"
            },
            "name": "kennel-shell-ws-0a1b"
          },
          "spec": {
            "operatingMode": "Running",
            "podTemplate": {
              "metadata": {
                "annotations": {
                  "dev.kennel.workspace": "/home/alice/repo"
                },
                "labels": {
                  "app.kubernetes.io/managed-by": "kennel",
                  "dev.kennel.pod": "kennel-shell-ws-0a1b"
                }
              },
              "spec": {
                "automountServiceAccountToken": false,
                "containers": [
                  {
                    "image": "kennel/shell:1",
                    "name": "agent"
                  }
                ],
                "restartPolicy": "Never"
              }
            }
          }
        }
        "#);
    }
}
