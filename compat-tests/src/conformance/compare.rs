//! What the probes printed, made comparable, and the comparison of a native run with a
//! ztrun run; the allowlist read from docs/COMPAT.md.

use std::collections::BTreeMap;
use std::fmt;

/// The results of one run of the probes: case name → outcome, in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Outcomes(pub BTreeMap<String, String>);

/// Addresses that may leak into a probe's output raw, and the word each stands for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Known {
    /// (address text, replacement), e.g. ("100.64.3.4", "SELF4").
    pub(crate) words: Vec<(String, &'static str)>,
}

impl Known {
    /// Replace every known address in `text` by its word (longest first, so an IPv6
    /// address is never half-replaced by a shorter one that prefixes it).
    pub(crate) fn normalize(&self, text: &str) -> String {
        let mut words: Vec<&(String, &'static str)> =
            self.words.iter().filter(|(a, _)| !a.is_empty()).collect();
        words.sort_by_key(|(a, _)| std::cmp::Reverse(a.len()));
        let mut out = text.to_string();
        for (addr, word) in words {
            out = out.replace(addr.as_str(), word);
        }
        out
    }
}

impl Outcomes {
    /// Parse the probes' stdout: `case: outcome` lines; whitespace inside an outcome is
    /// collapsed, other lines are ignored, and a repeated case name gets `#2`, `#3`...
    pub(crate) fn parse(stdout: &str, known: &Known) -> Outcomes {
        let mut map = BTreeMap::new();
        for line in stdout.lines() {
            let Some((name, outcome)) = line.split_once(": ") else {
                continue;
            };
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                continue;
            }
            let outcome =
                known.normalize(&outcome.split_whitespace().collect::<Vec<_>>().join(" "));
            let mut key = name.to_string();
            let mut n = 1;
            while map.contains_key(&key) {
                n += 1;
                key = format!("{name}#{n}");
            }
            map.insert(key, outcome);
        }
        Outcomes(map)
    }

    /// Number of results.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the run printed no result at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How one case compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Both runs printed the same outcome.
    Same,
    /// They differ (a missing result is `<missing>`).
    Differ {
        /// The native outcome.
        native: String,
        /// The outcome under ztrun.
        ztrun: String,
    },
    /// Two native runs disagree: the case is not deterministic, so nothing can be said.
    Unstable {
        /// The first native outcome.
        native: String,
        /// The second native outcome.
        again: String,
        /// The outcome under ztrun.
        ztrun: String,
    },
    /// The native run could not set the case up (or timed out), so nothing can be said.
    NativeFailed {
        /// The native outcome.
        native: String,
        /// The outcome under ztrun.
        ztrun: String,
    },
}

/// What a missing result reads as.
pub(crate) const MISSING: &str = "<missing>";

/// True for a native outcome that means the case was never exercised. (A result only
/// the ztrun run printed is a difference: the probes print the same lines whatever the
/// calls answer, so a missing native line is never a set-up problem of the case.)
fn native_failed(outcome: &str) -> bool {
    outcome.starts_with("setup-failed") || outcome == "timeout"
}

/// Compare every case any run printed. `again`, a second native run, marks the cases
/// whose native outcome is not reproducible as [`Verdict::Unstable`].
pub(crate) fn compare(
    native: &Outcomes,
    again: Option<&Outcomes>,
    ztrun: &Outcomes,
) -> Vec<(String, Verdict)> {
    let mut names: Vec<&String> = native.0.keys().chain(ztrun.0.keys()).collect();
    if let Some(again) = again {
        names.extend(again.0.keys());
    }
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let n = native.0.get(name).map_or(MISSING, String::as_str);
            let z = ztrun.0.get(name).map_or(MISSING, String::as_str);
            let a = again.map(|o| o.0.get(name).map_or(MISSING, String::as_str));
            let verdict = if native_failed(n) {
                Verdict::NativeFailed {
                    native: n.into(),
                    ztrun: z.into(),
                }
            } else if let Some(a) = a.filter(|a| *a != n) {
                Verdict::Unstable {
                    native: n.into(),
                    again: a.into(),
                    ztrun: z.into(),
                }
            } else if n == z {
                Verdict::Same
            } else {
                Verdict::Differ {
                    native: n.into(),
                    ztrun: z.into(),
                }
            };
            (name.clone(), verdict)
        })
        .collect()
}

/// The differences `compat-tests conformance` accepts: the `## Conformance allowlist`
/// section of docs/COMPAT.md, one entry per line, `` - `case-name`: reason ``.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Allowlist {
    /// (case name, reason).
    pub(crate) entries: Vec<(String, String)>,
    /// The `## Conformance: open differences` section, same format: differences known
    /// and not accepted (bugs still open). They do not fail a run, so the suite guards
    /// everything else against regressions, but they are reported as OPEN, and an
    /// entry that no longer differs fails a full run until it is removed.
    pub(crate) open: Vec<(String, String)>,
}

/// The most entries the allowlist may hold: every other difference is a bug to fix.
pub(crate) const ALLOWLIST_MAX: usize = 5;

/// Why the allowlist cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AllowlistError {
    /// The document has no `## Conformance allowlist` section.
    NoSection,
    /// An entry line does not read `` - `case`: reason ``.
    BadEntry(String),
    /// More than [`ALLOWLIST_MAX`] entries.
    TooMany(usize),
}

impl fmt::Display for AllowlistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowlistError::NoSection => write!(f, "no `## Conformance allowlist` section"),
            AllowlistError::BadEntry(line) => write!(
                f,
                "allowlist entry `{line}` does not read \"- `case-name`: reason\""
            ),
            AllowlistError::TooMany(n) => write!(
                f,
                "the allowlist has {n} entries; at most {ALLOWLIST_MAX} are allowed"
            ),
        }
    }
}

impl std::error::Error for AllowlistError {}

impl Allowlist {
    /// Read the section from the Markdown of docs/COMPAT.md. Lines of the section that do
    /// not start with `- ` are prose and ignored.
    pub(crate) fn parse(markdown: &str) -> Result<Allowlist, AllowlistError> {
        let entries = Self::section(markdown, "## Conformance allowlist")?
            .ok_or(AllowlistError::NoSection)?;
        if entries.len() > ALLOWLIST_MAX {
            return Err(AllowlistError::TooMany(entries.len()));
        }
        let open = Self::section(markdown, "## Conformance: open differences")?.unwrap_or_default();
        Ok(Allowlist { entries, open })
    }

    /// The entries of the section headed `heading` (`None`: no such section).
    fn section(
        markdown: &str,
        heading: &str,
    ) -> Result<Option<Vec<(String, String)>>, AllowlistError> {
        let mut lines = markdown.lines();
        if !lines.by_ref().any(|l| l.trim() == heading) {
            return Ok(None);
        }
        let mut entries = Vec::new();
        for line in lines {
            if line.starts_with("## ") || line.starts_with("# ") {
                break;
            }
            let Some(rest) = line.trim().strip_prefix("- ") else {
                continue;
            };
            let bad = || AllowlistError::BadEntry(line.trim().to_string());
            let rest = rest.strip_prefix('`').ok_or_else(bad)?;
            let (case, reason) = rest.split_once('`').ok_or_else(bad)?;
            let reason = reason.strip_prefix(':').ok_or_else(bad)?.trim();
            if case.is_empty() || case.contains(char::is_whitespace) || reason.is_empty() {
                return Err(bad());
            }
            entries.push((case.to_string(), reason.to_string()));
        }
        Ok(Some(entries))
    }

    /// True when `case` is allowed to differ.
    pub(crate) fn allows(&self, case: &str) -> bool {
        self.entries.iter().any(|(c, _)| c == case)
    }

    /// True when `case` is a known, open difference.
    pub(crate) fn is_open(&self, case: &str) -> bool {
        self.open.iter().any(|(c, _)| c == case)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Known {
        Known {
            words: vec![
                ("100.64.1.2".into(), "SELF4"),
                ("fdff:0:0:12:3499:9389:e92c:eba1".into(), "SELF6"),
                ("fdff:0:0:12:3499:9389:e92c:eb".into(), "NOT-THIS"),
            ],
        }
    }

    #[test]
    fn lines_parse_and_normalize() {
        let out = "ztrun: joined something\n\
                   bind.any.tcp4: ret=0\n\
                   weird line without separator\n\
                   x.name:   fam=INET  len=16 ip=100.64.1.2\n\
                   y: addr fdff:0:0:12:3499:9389:e92c:eba1 port=eph\n\
                   bind.any.tcp4: ret=-1 errno=EINVAL\n";
        let o = Outcomes::parse(out, &known());
        assert_eq!(o.0["bind.any.tcp4"], "ret=0");
        assert_eq!(o.0["bind.any.tcp4#2"], "ret=-1 errno=EINVAL");
        assert_eq!(o.0["x.name"], "fam=INET len=16 ip=SELF4");
        assert_eq!(o.0["y"], "addr SELF6 port=eph");
        // "ztrun: joined ..." parses as a case named "ztrun"; harmless, ztrun's own
        // lines go to stderr, which is never parsed.
        assert_eq!(o.len(), 5);
    }

    #[test]
    fn comparison_tells_same_differ_missing_and_native_failures() {
        let k = Known::default();
        let native = Outcomes::parse(
            "a: ret=0\nb: ret=-1 errno=EISCONN\nc: setup-failed listen errno=EPERM\n\
             d.exit: timeout\ne: ret=1\n",
            &k,
        );
        let ztrun = Outcomes::parse("a: ret=0\nb: ret=0\nc: ret=0\nd.exit: timeout\nf: x\n", &k);
        let again = Outcomes::parse(
            "a: ret=0\nb: ret=-1 errno=EISCONN\nc: setup-failed\nd.exit: timeout\ne: ret=2\n",
            &k,
        );
        let v: BTreeMap<String, Verdict> = compare(&native, None, &ztrun).into_iter().collect();
        let w: BTreeMap<String, Verdict> =
            compare(&native, Some(&again), &ztrun).into_iter().collect();
        assert_eq!(w["a"], Verdict::Same);
        assert!(matches!(w["b"], Verdict::Differ { .. }));
        assert_eq!(
            w["e"],
            Verdict::Unstable {
                native: "ret=1".into(),
                again: "ret=2".into(),
                ztrun: MISSING.into()
            }
        );
        assert_eq!(v["a"], Verdict::Same);
        assert_eq!(
            v["b"],
            Verdict::Differ {
                native: "ret=-1 errno=EISCONN".into(),
                ztrun: "ret=0".into()
            }
        );
        // never "same", even when both sides agree
        assert!(matches!(v["c"], Verdict::NativeFailed { .. }));
        assert!(matches!(v["d.exit"], Verdict::NativeFailed { .. }));
        assert_eq!(
            v["e"],
            Verdict::Differ {
                native: "ret=1".into(),
                ztrun: MISSING.into()
            }
        );
        assert_eq!(
            v["f"],
            Verdict::Differ {
                native: MISSING.into(),
                ztrun: "x".into()
            }
        );
    }

    #[test]
    fn allowlist_is_read_from_its_section() {
        let doc = "# Title\n\n## Conformance allowlist\n\nProse about it.\n\n\
                   - `bind.port80.tcp4`: the virtual network has no privileged ports\n\
                   - `x.y`: reason two\n\n## Conformance: differences found\n\n\
                   - `not.an.entry`: belongs to the next section\n";
        let a = Allowlist::parse(doc).unwrap();
        assert_eq!(a.entries.len(), 2);
        assert!(a.allows("bind.port80.tcp4"));
        assert!(!a.allows("not.an.entry"));
        assert_eq!(a.entries[1].1, "reason two");

        let empty = Allowlist::parse("## Conformance allowlist\n\n(none)\n").unwrap();
        assert!(empty.entries.is_empty());
        assert_eq!(
            Allowlist::parse("# nothing"),
            Err(AllowlistError::NoSection)
        );
        assert!(matches!(
            Allowlist::parse("## Conformance allowlist\n- case without backticks: r\n"),
            Err(AllowlistError::BadEntry(_))
        ));
        assert!(matches!(
            Allowlist::parse("## Conformance allowlist\n- `a`:\n"),
            Err(AllowlistError::BadEntry(_))
        ));
        let six: String = (0..6).map(|i| format!("- `c{i}`: r\n")).collect();
        assert_eq!(
            Allowlist::parse(&format!("## Conformance allowlist\n{six}")),
            Err(AllowlistError::TooMany(6))
        );
    }
}
