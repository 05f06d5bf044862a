//! Feature reference syntax: `view:feature`, `view@vN:feature`, `view@latest:feature`.
//!
//! Owns: parsing a ref string into its parts, and rendering the names Feast derives
//! from them. Does not own: whether the view, version or feature exists (that is
//! `serving::plan` against a registry snapshot).

use std::fmt;

use crate::error::clipped;

/// Which version of a view a ref asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersionSel {
    /// `view:feature`: the active version (or the unversioned table with versioning off).
    Unqualified,
    /// `view@latest:feature` or `view@:feature`: the active version.
    Latest,
    /// `view@vN:feature` (also `@VN`, leading zeros allowed).
    Exact(u32),
}

/// A parsed feature reference, borrowing from the request string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureRef<'a> {
    /// The feature view (or alias) name, without any `@` suffix.
    pub view: &'a str,
    /// The version selector.
    pub version: VersionSel,
    /// The feature name: everything after the first `:`.
    pub feature: &'a str,
}

/// A ref that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// No `:` separating view and feature. Feast's text.
    #[error(
        "Invalid feature reference '{0}'. Expected format: '<feature_view>:<feature>' or '<feature_view>@<version>:<feature>'"
    )]
    MissingColon(String),
    /// Empty view or feature name.
    #[error(
        "Invalid feature reference '{0}': the feature view and the feature name must both be non-empty"
    )]
    EmptyPart(String),
    /// Text after `@` that is not a version. Feast treats it as part of the view name and
    /// answers "view not found"; saying what is wrong is more useful.
    #[error(
        "Invalid version '{suffix}' in feature reference '{reference}'. Accepted forms: 'view:feature', 'view@vN:feature' (e.g. 'driver_stats@v2:conv_rate'), 'view@latest:feature'"
    )]
    BadVersion {
        /// The whole ref as given.
        reference: String,
        /// The text after `@`.
        suffix: String,
    },
}

/// Parses one feature reference.
///
/// The feature part is everything after the first `:` (it may itself contain `:`);
/// the version is the text after the first `@` of the view part.
pub fn parse(reference: &str) -> Result<FeatureRef<'_>, RefError> {
    let Some((view_part, feature)) = reference.split_once(':') else {
        return Err(RefError::MissingColon(clipped(reference)));
    };
    let (view, version) = match view_part.split_once('@') {
        None => (view_part, VersionSel::Unqualified),
        Some((view, suffix)) => (view, parse_version(reference, suffix)?),
    };
    if view.is_empty() || feature.is_empty() {
        return Err(RefError::EmptyPart(clipped(reference)));
    }
    Ok(FeatureRef {
        view,
        version,
        feature,
    })
}

fn parse_version(reference: &str, suffix: &str) -> Result<VersionSel, RefError> {
    if suffix.is_empty() || suffix.eq_ignore_ascii_case("latest") {
        return Ok(VersionSel::Latest);
    }
    let bad = || RefError::BadVersion {
        reference: clipped(reference),
        suffix: clipped(suffix),
    };
    let digits = suffix
        .strip_prefix(['v', 'V'])
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(bad)?;
    // Leading zeros are fine ("v01" is v1); a number beyond i32 cannot be a Feast version.
    let n: u32 = digits.parse().map_err(|_| bad())?;
    if n > i32::MAX as u32 {
        return Err(bad());
    }
    Ok(VersionSel::Exact(n))
}

/// The name a view goes by in output column names and error texts: the view (or
/// alias) name, plus `@vN` for an explicitly versioned ref. Feast calls it
/// `name_to_use()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplayName<'a> {
    /// View name or alias.
    pub name: &'a str,
    /// `Some(n)` renders `@vN`.
    pub version: Option<u32>,
}

impl fmt::Display for DisplayName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(n) => write!(f, "{}@v{n}", self.name),
            None => f.write_str(self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (String, VersionSel, String) {
        let r = parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (r.view.to_owned(), r.version, r.feature.to_owned())
    }

    #[test]
    fn accepted_forms() {
        use VersionSel::*;
        let cases = [
            (
                "driver_stats:conv_rate",
                "driver_stats",
                Unqualified,
                "conv_rate",
            ),
            (
                "driver_stats@v2:conv_rate",
                "driver_stats",
                Exact(2),
                "conv_rate",
            ),
            (
                "driver_stats@V2:conv_rate",
                "driver_stats",
                Exact(2),
                "conv_rate",
            ),
            (
                "driver_stats@v01:conv_rate",
                "driver_stats",
                Exact(1),
                "conv_rate",
            ),
            (
                "driver_stats@v0:conv_rate",
                "driver_stats",
                Exact(0),
                "conv_rate",
            ),
            (
                "driver_stats@latest:conv_rate",
                "driver_stats",
                Latest,
                "conv_rate",
            ),
            (
                "driver_stats@LATEST:conv_rate",
                "driver_stats",
                Latest,
                "conv_rate",
            ),
            (
                "driver_stats@:conv_rate",
                "driver_stats",
                Latest,
                "conv_rate",
            ),
            ("v:a:b", "v", Unqualified, "a:b"),
        ];
        for (input, view, version, feature) in cases {
            assert_eq!(
                ok(input),
                (view.to_owned(), version, feature.to_owned()),
                "{input}"
            );
        }
    }

    #[test]
    fn rejected_forms() {
        assert_eq!(
            parse("conv_rate").unwrap_err().to_string(),
            "Invalid feature reference 'conv_rate'. Expected format: '<feature_view>:<feature>' or '<feature_view>@<version>:<feature>'"
        );
        assert!(matches!(
            parse("driver_stats@v1"),
            Err(RefError::MissingColon(_))
        ));
        for bad in [
            "driver_stats@vX:f",
            "driver_stats@version1:f",
            "driver_stats@2:f",
            "driver_stats@v:f",
            "driver_stats@v-1:f",
            "driver_stats@v1x:f",
            "driver_stats@v 1:f",
            "driver_stats@v99999999999:f",
            "driver_stats@v1@v2:f",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(matches!(err, RefError::BadVersion { .. }), "{bad}: {err}");
            assert!(
                err.to_string().contains(bad),
                "{bad}: message names the ref"
            );
        }
        for empty in [":f", "v:", "@v1:f", ":"] {
            assert!(parse(empty).is_err(), "{empty}");
        }
    }

    #[test]
    fn display_names() {
        let plain = DisplayName {
            name: "driver_stats",
            version: None,
        };
        let versioned = DisplayName {
            name: "ds_alias",
            version: Some(1),
        };
        assert_eq!(plain.to_string(), "driver_stats");
        assert_eq!(versioned.to_string(), "ds_alias@v1");
    }
}
