//! How long a throw-away container takes through this client and through
//! the `incus` CLI: create + start, `true`, delete, of an ephemeral
//! container from the test image. Also exec over websockets against exec
//! with `record-output`.
//!
//!     cargo run --release -p kennel-incus --example timing [IMAGE] [ROUNDS]
//!
//! IMAGE defaults to kennel-test/bookworm (scripts/incus-setup.sh), ROUNDS
//! to 5. Run it as root (admin socket) or as a member of group `incus`
//! (incus-user's socket); the CLI picks the same socket.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::Command;
use std::time::{Duration, Instant};

use kennel_incus::{Client, ExecRequest, ImageSource, IncusError, NewInstance};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

fn cli(args: &[&str]) -> Result<(), String> {
    let output = Command::new("incus")
        .args(args)
        .output()
        .map_err(|err| format!("incus: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "incus {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let image = args
        .next()
        .unwrap_or_else(|| "kennel-test/bookworm".to_string());
    let rounds: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(5);
    let client = Client::connect_default().await?;
    println!(
        "Incus {} on {} (project {}), image {image}, {rounds} rounds",
        client.server_info().server_version,
        client.socket().display(),
        client.project()
    );

    // A first container unpacks the image into the pool; not counted.
    let warm = "kennel-timing-warm-up";
    client
        .create_instance(
            &NewInstance::from_image(warm, ImageSource::Alias(image.clone()))
                .ephemeral(true)
                .start(true),
        )
        .await?;

    let (mut total, mut create, mut exec, mut delete) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let name = format!("kennel-timing-client-{round}");
        let start = Instant::now();
        client
            .create_instance(
                &NewInstance::from_image(&name, ImageSource::Alias(image.clone()))
                    .ephemeral(true)
                    .start(true),
            )
            .await?;
        let created = start.elapsed();
        let output = client.exec(&name, &ExecRequest::new(["true"])).await?;
        assert_eq!(output.exit_code, 0);
        let executed = start.elapsed();
        client.force_delete_instance(&name).await?;
        let deleted = start.elapsed();
        create.push(created);
        exec.push(executed - created);
        delete.push(deleted - executed);
        total.push(deleted);
    }

    let mut cli_total = vec![];
    for round in 0..rounds {
        let name = format!("kennel-timing-cli-{round}");
        let start = Instant::now();
        cli(&["launch", &image, &name, "--ephemeral", "--quiet"])?;
        cli(&["exec", &name, "--", "true"])?;
        cli(&["delete", "--force", &name])?;
        cli_total.push(start.elapsed());
    }

    // Exec alone, both ways, in the warm container.
    let execs = rounds * 4;
    let (mut websockets, mut recorded, mut via_cli) = (vec![], vec![], vec![]);
    for _ in 0..execs {
        let start = Instant::now();
        client.exec(warm, &ExecRequest::new(["true"])).await?;
        websockets.push(start.elapsed());
        let start = Instant::now();
        client
            .exec_recorded(warm, &ExecRequest::new(["true"]))
            .await?;
        recorded.push(start.elapsed());
        let start = Instant::now();
        cli(&["exec", warm, "--", "true"])?;
        via_cli.push(start.elapsed());
    }
    match client.force_delete_instance(warm).await {
        Ok(()) | Err(IncusError::NotFound { .. }) => {}
        Err(err) => return Err(err.into()),
    }

    println!(
        "client: create+start+exec(true)+delete median {} (create+start {}, exec {}, delete {})",
        ms(median(total)),
        ms(median(create)),
        ms(median(exec)),
        ms(median(delete))
    );
    println!(
        "CLI:    launch -e + exec true + delete -f median {}",
        ms(median(cli_total))
    );
    println!(
        "exec true, median of {execs}: websockets {}, record-output {}, CLI {}",
        ms(median(websockets)),
        ms(median(recorded)),
        ms(median(via_cli))
    );
    Ok(())
}
