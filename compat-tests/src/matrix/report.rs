//! The results: a plain table for the terminal and `COMPATIBILITY.md`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Mode, Verdict};

/// One scenario's result.
#[derive(Debug, Clone)]
pub struct Row {
    /// The scenario's command-line name.
    pub name: &'static str,
    /// The application, as shown.
    pub app: &'static str,
    /// Package versions, from the package database.
    pub version: String,
    /// The date of the run (UTC, `YYYY-MM-DD`).
    pub date: String,
    /// The outcome.
    pub verdict: Verdict,
    /// What was checked and measured, or why it is BROKEN.
    pub notes: String,
    /// How long the scenario took, set-up and teardown included.
    pub elapsed: Duration,
}

/// The date of `at` in UTC as `YYYY-MM-DD` (proleptic Gregorian calendar).
pub fn utc_date(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Year, month and day of the day `z` days after 1970-01-01 (the well-known
/// era-based conversion: 400-year eras of 146 097 days, years starting in March).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A fixed-width table for the terminal: one line per row, notes last and unwrapped.
pub fn table(rows: &[Row]) -> String {
    let headers = ["application", "version", "date", "result", "time", "notes"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.app.to_owned(),
                r.version.clone(),
                r.date.clone(),
                r.verdict.word().to_owned(),
                format!("{:.1}s", r.elapsed.as_secs_f64()),
                r.notes.clone(),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cols: &[String]| {
        let mut text = String::new();
        for (i, (cell, w)) in cols.iter().zip(widths).enumerate() {
            if i == cols.len() - 1 {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut out = line(&headers.map(String::from));
    for row in &cells {
        out.push_str(&line(row));
    }
    out
}

/// `COMPATIBILITY.md`: what was run, how, and the table.
pub fn markdown(rows: &[Row], mode: Mode, wall: Duration, command: &str) -> String {
    let works = rows.iter().filter(|r| r.verdict == Verdict::Works).count();
    let marginal = rows
        .iter()
        .filter(|r| r.verdict == Verdict::Marginal)
        .count();
    let broken = rows.iter().filter(|r| r.verdict == Verdict::Broken).count();
    let date = rows
        .first()
        .map(|r| r.date.clone())
        .unwrap_or_else(|| utc_date(SystemTime::now()));
    let how = match mode {
        Mode::Ztrun => {
            "Each server runs under `ztrun` on member host 1 and its client under `ztrun` on \
             member host 2. Each member is behind its own port-restricted-cone NAT on a public \
             LAN that holds the root/controller host, so every byte between them crosses the \
             virtual network."
        }
        Mode::Native => {
            "**Native mode**: no `ztrun`. The programs ran directly on two test hosts sharing \
             one LAN, with the kernel's network: this is the reference run that validates the \
             scenarios themselves, not a result for ztrun."
        }
    };
    let mut out = String::new();
    out.push_str("# Compatibility matrix\n\n");
    out.push_str(&format!(
        "Written by `{command}` on {date} ({mode} mode, {works} WORKS, {marginal} MARGINAL, \
         {broken} BROKEN, {:.0} s). {how} Each scenario runs on fresh test hosts (network \
         namespaces) as the unprivileged uid 65534, checks a real result and is torn down; \
         `docs/COMPAT.md` says what each one does.\n\n",
        wall.as_secs_f64()
    ));
    out.push_str("| application | version | date | result | notes |\n");
    out.push_str("|---|---|---|---|---|\n");
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            cell(r.app),
            cell(&r.version),
            r.date,
            r.verdict.word(),
            cell(&r.notes)
        ));
    }
    out
}

/// Text made safe for a Markdown table cell, without this machine's paths (see
/// [`portable`]).
fn cell(text: &str) -> String {
    portable(text).replace('|', "\\|").replace('\n', " ")
}

/// `text` with what only this machine knows taken out of the commands quoted in notes:
/// a scenario directory (`/tmp/ztmatrix-NAME-XXXXXX`) becomes `<scenario dir>`, and the
/// launcher binaries (`.../ztrun`, `.../zt`) their names, so the committed
/// `COMPATIBILITY.md` reads the same whoever ran it.
pub(crate) fn portable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("/tmp/ztmatrix-") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + "/tmp/ztmatrix-".len()..];
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '`' || c == '"')
            .unwrap_or(tail.len());
        out.push_str("<scenario dir>");
        rest = &tail[end..];
    }
    out.push_str(rest);
    let mut words = String::with_capacity(out.len());
    for (i, word) in out.split(' ').enumerate() {
        if i > 0 {
            words.push(' ');
        }
        let bare = word.trim_start_matches(['`', '(', '"']);
        let binary = bare.starts_with('/') && ["/ztrun", "/zt"].iter().any(|b| bare.ends_with(b));
        if binary {
            let name = bare.rsplit('/').next().unwrap_or(bare);
            words.push_str(&word[..word.len() - bare.len()]);
            words.push_str(name);
        } else {
            words.push_str(word);
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_lose_machine_specific_paths() {
        assert_eq!(
            portable(
                "failed (`/work/tgt/x/debug/ztrun --nwid ff --home /tmp/ztmatrix-overlay-Ab12Cd/member2 -- curl http://a/`): ztrun: joined"
            ),
            "failed (`ztrun --nwid ff --home <scenario dir>/member2 -- curl http://a/`): ztrun: joined"
        );
        assert_eq!(
            portable("kept /tmp/ztmatrix-ping-x1 and /usr/bin/zt"),
            "kept <scenario dir> and zt"
        );
        assert_eq!(
            portable("sha256 match, 3 × 4 MiB"),
            "sha256 match, 3 × 4 MiB"
        );
    }

    #[test]
    fn dates_are_gregorian() {
        assert_eq!(utc_date(UNIX_EPOCH), "1970-01-01");
        let at = |secs: u64| utc_date(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(951_782_400), "2000-02-29"); // leap day of a 400-year leap year
        assert_eq!(at(1_709_164_800), "2024-02-29");
        assert_eq!(at(1_735_689_599), "2024-12-31");
        assert_eq!(at(4_107_542_400), "2100-03-01"); // 2100 is not a leap year
    }

    fn row(app: &'static str, verdict: Verdict, notes: &str) -> Row {
        Row {
            name: app,
            app,
            version: "1.0".into(),
            date: "2026-01-02".into(),
            verdict,
            notes: notes.into(),
            elapsed: Duration::from_millis(1500),
        }
    }

    #[test]
    fn table_aligns_columns_and_keeps_notes_whole() {
        let text = table(&[
            row("python", Verdict::Works, "sha256 ok"),
            row("ping", Verdict::Broken, "no reply"),
        ]);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = lines[0].find("result").unwrap();
        assert_eq!(&lines[1][col..col + 5], "WORKS");
        assert_eq!(&lines[2][col..col + 6], "BROKEN");
        assert!(lines[2].ends_with("no reply"));
    }

    #[test]
    fn markdown_counts_and_escapes() {
        let md = markdown(
            &[
                row("a", Verdict::Works, "x|y"),
                row("b", Verdict::Marginal, ""),
                row("c", Verdict::Broken, "why"),
            ],
            Mode::Native,
            Duration::from_secs(12),
            "compat-tests matrix",
        );
        assert!(md.contains("1 WORKS, 1 MARGINAL, 1 BROKEN"), "{md}");
        assert!(
            md.contains("| a | 1.0 | 2026-01-02 | WORKS | x\\|y |"),
            "{md}"
        );
        assert!(md.contains("Native mode"));
    }
}
