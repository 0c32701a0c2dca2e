//! Copying an attached container's output to kennel's stdout and stderr.

use tokio::io::AsyncReadExt;
use tracing::debug;

use kennel_term::Sink;
pub(crate) use kennel_term::{AtEof, RawMode, window_size};

/// Copy the attach stream to kennel's stdout/stderr until the engine closes it.
/// With a TTY the stream is raw; otherwise it is multiplexed in 8-byte-headed frames.
pub(crate) async fn pump_output<R: tokio::io::AsyncRead + Unpin>(
    mut reader: R,
    leftover: Vec<u8>,
    tty: bool,
) -> std::io::Result<()> {
    let mut stdout = Sink::new(tokio::io::stdout());
    let mut stderr = Sink::new(tokio::io::stderr());
    let mut buf = leftover;
    let mut chunk = vec![0u8; 32 * 1024];
    let mut raw = tty;
    loop {
        if raw {
            stdout.write(&buf).await;
            buf.clear();
        } else {
            // Emit every complete frame in the buffer.
            loop {
                if buf.len() < 8 {
                    break;
                }
                let kind = buf[0];
                if kind > 2 || buf[1..4] != [0, 0, 0] {
                    // Not a multiplexed stream after all: pass it through as is.
                    debug!("attach stream is not multiplexed; copying it raw");
                    raw = true;
                    stdout.write(&buf).await;
                    buf.clear();
                    break;
                }
                let length = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
                if buf.len() < 8 + length {
                    break;
                }
                let payload = &buf[8..8 + length];
                match kind {
                    2 => stderr.write(payload).await,
                    _ => stdout.write(payload).await,
                }
                buf.drain(..8 + length);
            }
        }
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            if !buf.is_empty() {
                debug!(
                    bytes = buf.len(),
                    "incomplete frame at the end of the attach stream"
                );
                stdout.write(&buf).await;
            }
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    stdout.flush().await;
    stderr.flush().await;
    Ok(())
}
