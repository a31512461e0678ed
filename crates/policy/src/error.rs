//! Errors returned while loading policies or encoding facts.

use std::fmt;

/// One problem found in one stored policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocProblem {
    /// Id of the policy document (as stored) the problem is in.
    pub doc_id: String,
    /// Id of the individual Cedar policy (`doc` or `doc#N`), when the problem
    /// belongs to one policy of the document.
    pub policy_id: Option<String>,
    /// Where in the document text, as `line:column` (1-based), when known.
    pub location: Option<(usize, usize)>,
    /// What is wrong, in Cedar's words, plus Cedar's hint when it has one.
    pub message: String,
}

impl fmt::Display for DocProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy document {:?}", self.doc_id)?;
        if let Some(policy_id) = &self.policy_id
            && policy_id != &self.doc_id
        {
            write!(f, " (policy {policy_id})")?;
        }
        if let Some((line, column)) = self.location {
            write!(f, " at line {line}, column {column}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why policies could not be loaded or a fact could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// At least one policy document failed to parse or did not validate
    /// against the Tsuzuku schema. Every problem found is listed.
    #[error("{}", render_problems(.problems))]
    Invalid {
        /// Every problem found, in document order.
        problems: Vec<DocProblem>,
    },
    /// The built-in schema did not load. This is a bug in tsuzuku-policy,
    /// not in the stored policies.
    #[error("the built-in Tsuzuku policy schema failed to load (a bug in tsuzuku-policy): {0}")]
    Schema(String),
    /// A version string could not be turned into a comparable number.
    #[error(
        "version {input:?} cannot be encoded: {reason}; expected up to four dot-separated numbers \
         A.B.C.D with A and B at most 9999 and C and D at most 99999, e.g. \"4.18.24030.9\""
    )]
    BadVersion {
        /// The version text as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn render_problems(problems: &[DocProblem]) -> String {
    let mut out = format!(
        "{} problem(s) in the policy documents; fix them and load again (nothing was loaded):",
        problems.len()
    );
    for problem in problems {
        out.push_str("\n  - ");
        out.push_str(&problem.to_string());
    }
    out
}
