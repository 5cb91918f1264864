//! Versions of the applications, from the package database (dpkg-query(1)).

use std::process::Command;

/// `package version` for every installed package matching one of `patterns` (dpkg-query
/// glob patterns such as `openjdk-*-jdk-headless`), joined by ", "; "not installed" when
/// none is.
pub(crate) fn describe(patterns: &[&str]) -> String {
    let mut found: Vec<String> = Vec::new();
    for pattern in patterns {
        let out = Command::new("dpkg-query")
            .args([
                "-W",
                "-f",
                "${db:Status-Abbrev}|${Package}|${Version}\\n",
                pattern,
            ])
            .output();
        let Ok(out) = out else {
            return "unknown (dpkg-query could not run)".into();
        };
        for entry in parse(&String::from_utf8_lossy(&out.stdout)) {
            if !found.contains(&entry) {
                found.push(entry);
            }
        }
    }
    if found.is_empty() {
        "not installed".into()
    } else {
        found.join(", ")
    }
}

/// The installed entries (`ii` status) of dpkg-query's output, as `package version`;
/// the architecture suffix (`:amd64`) is dropped.
fn parse(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, '|');
            let status = fields.next()?;
            let package = fields.next()?;
            let version = fields.next()?;
            (status.starts_with("ii") && !version.is_empty()).then(|| {
                let package = package.split(':').next().unwrap_or(package);
                format!("{package} {version}")
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_installed_packages_are_reported() {
        let out =
            "ii |nginx|1.22.1-9\nun |nginx-light|\nrc |old|1.0\nii |golang-go:amd64|2:1.19~1\n";
        assert_eq!(parse(out), ["nginx 1.22.1-9", "golang-go 2:1.19~1"]);
    }

    #[test]
    fn an_unknown_package_is_not_installed() {
        assert_eq!(describe(&["no-such-package-ztmatrix"]), "not installed");
    }
}
