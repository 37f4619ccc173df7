//! What the Redis behind a backplane did during a run: command calls and CPU seconds, read with
//! `INFO all` over a raw RESP connection (no client library: the load generator stays lean).

use std::collections::HashMap;
use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One `INFO` reading.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    /// Calls per command (`cmdstat_<name>:calls=N`), commands run inside scripts included.
    pub calls: HashMap<String, u64>,
    /// `used_cpu_user + used_cpu_sys` of the Redis process.
    pub cpu_seconds: f64,
}

impl Reading {
    pub fn calls_of(&self, command: &str) -> u64 {
        self.calls.get(command).copied().unwrap_or(0)
    }

    /// Calls of every command but the ones the measurement itself makes (`info`) and the
    /// instances' liveness probes (`ping`), which do not scale with publishes.
    pub fn work_calls(&self) -> u64 {
        self.calls
            .iter()
            .filter(|(name, _)| !matches!(name.as_str(), "info" | "ping"))
            .map(|(_, calls)| calls)
            .sum()
    }
}

pub async fn read(addr: SocketAddr) -> std::io::Result<Reading> {
    let stream = TcpStream::connect(addr).await?;
    let mut stream = BufReader::new(stream);
    stream
        .get_mut()
        .write_all(b"*2\r\n$4\r\nINFO\r\n$3\r\nall\r\n")
        .await?;
    let mut header = String::new();
    stream.read_line(&mut header).await?;
    let length: usize = header
        .strip_prefix('$')
        .and_then(|l| l.trim_end().parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("INFO answered {header:?}")))?;
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await?;
    let text = String::from_utf8_lossy(&body);
    let mut reading = Reading::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("cmdstat_")
            && let Some((name, fields)) = rest.split_once(':')
            && let Some(calls) = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|c| c.parse().ok())
        {
            reading.calls.insert(name.to_owned(), calls);
        } else if let Some(value) = line
            .strip_prefix("used_cpu_user:")
            .or_else(|| line.strip_prefix("used_cpu_sys:"))
        {
            reading.cpu_seconds += value.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    Ok(reading)
}
