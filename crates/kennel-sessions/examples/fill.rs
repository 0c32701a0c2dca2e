//! Fills a registry with sessions, for benchmarks: `fill DB N`.
//! Half are running, half exited within the last hour, so that a plain
//! `kennel ls` lists all of them.

use std::path::PathBuf;

use kennel_sessions::{Limits, Mode, NewSession, Registry, SlotRequest, State};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(count)) = (args.next(), args.next()) else {
        return Err("usage: fill DB N".into());
    };
    let count: usize = count.parse()?;
    let mut registry = Registry::open(&PathBuf::from(path))?;
    let agents = ["claude", "codex", "gemini", "aider", "shell"];
    for n in 0..count {
        let agent = agents[n % agents.len()];
        let session = registry.insert(&NewSession {
            name: None,
            agent: agent.into(),
            workspace: format!("/home/bench/src/project-{}", n % 17).into(),
            slot: SlotRequest::Free,
            slots_per_workspace: true,
            owner: None,
            backend: ["docker", "podman", "native"][n % 3].into(),
            ends_with_owner: n % 3 == 2,
            mode: Mode::Ephemeral,
            limits: Limits {
                pids: Some(1024),
                memory: Some(4 << 30),
                cpus: Some(2.0),
            },
            plan: Some(format!(
                r#"{{"version":1,"agent":"{agent}","command":["{agent}"]}}"#
            )),
        })?;
        registry.mark_running(&session.id, &format!("kennel-{agent}-{n}"))?;
        if n % 2 == 1 {
            registry.mark_ended(&session.id, State::Exited, Some((n % 3) as i32))?;
        }
    }
    Ok(())
}
