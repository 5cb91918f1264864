//! Reading what the measured programs print: rr-client's JSON, redis-benchmark's CSV,
//! the CPU-bound program's times; and the median.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};

use super::process::tail;

/// The median of `values` (the mean of the middle two for an even count).
pub(super) fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 0 {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

pub(super) fn last_json_line(stdout: &str) -> anyhow::Result<serde_json::Value> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow::anyhow!("no JSON line in the output: {}", tail(stdout)))?;
    serde_json::from_str(line).with_context(|| format!("parsing {line:?}"))
}

pub(super) fn json_f64(json: &serde_json::Value, key: &str) -> anyhow::Result<f64> {
    json.get(key)
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| anyhow::anyhow!("no number {key:?} in {json}"))
}

/// "WALL CPU" as printed by the CPU-bound program.
pub(super) fn parse_two_seconds(stdout: &str) -> anyhow::Result<(f64, f64)> {
    let mut numbers = stdout.split_whitespace().map(str::parse::<f64>);
    match (numbers.next(), numbers.next(), numbers.next()) {
        (Some(Ok(wall)), Some(Ok(cpu)), None) => Ok((wall, cpu)),
        _ => bail!(
            "the CPU-bound program printed {:?}, not two times",
            stdout.trim()
        ),
    }
}

/// Milliseconds from `spawned_at` to the client's `first_reply_unix_ns`.
pub(super) fn first_reply_ms(
    json: &serde_json::Value,
    spawned_at: SystemTime,
) -> anyhow::Result<f64> {
    let reply_ns: u128 = json
        .get("first_reply_unix_ns")
        .and_then(serde_json::Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no first_reply_unix_ns in {json}"))?;
    let spawn_ns = spawned_at
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?
        .as_nanos();
    anyhow::ensure!(reply_ns >= spawn_ns, "the reply is older than the spawn");
    Ok((reply_ns - spawn_ns) as f64 / 1e6)
}

/// Requests per second of `test` in redis-benchmark's `--csv` output
/// (`"SET","86206.90",...`).
pub(super) fn redis_rps(csv: &str, test: &str) -> anyhow::Result<f64> {
    let prefix = format!("\"{test}\",");
    let line = csv
        .lines()
        .find(|l| l.starts_with(&prefix))
        .ok_or_else(|| {
            anyhow::anyhow!("no {test} line in redis-benchmark's output: {}", tail(csv))
        })?;
    line[prefix.len()..]
        .split(',')
        .next()
        .map(|v| v.trim_matches('"'))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no rate in {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    #[test]
    fn cpu_program_output_is_two_times() {
        assert_eq!(parse_two_seconds("2.5 2.25\n").unwrap(), (2.5, 2.25));
        assert!(parse_two_seconds("2.5\n").is_err());
        assert!(parse_two_seconds("2.5 x").is_err());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn redis_benchmark_csv_rates() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\"\n\
                   \"SET\",\"86206.90\",\"0.310\",\"0.100\"\n\
                   \"GET\",\"90909.09\",\"0.290\",\"0.090\"\n";
        assert_eq!(redis_rps(csv, "SET").unwrap(), 86206.90);
        assert_eq!(redis_rps(csv, "GET").unwrap(), 90909.09);
        assert!(redis_rps(csv, "INCR").is_err());
        assert!(redis_rps("\"SET\",\"fast\"", "SET").is_err());
    }

    #[test]
    fn first_reply_is_measured_from_the_spawn() {
        let spawned = UNIX_EPOCH + Duration::from_secs(1_000);
        let json = serde_json::json!({"first_reply_unix_ns": "1000150000000"});
        assert_eq!(first_reply_ms(&json, spawned).unwrap(), 150.0);
        let early = serde_json::json!({"first_reply_unix_ns": "5"});
        assert!(first_reply_ms(&early, spawned).is_err());
    }
}
