//! Loading policy documents: parse them, give every Cedar policy a stable id
//! derived from its document, validate the whole set against the schema in
//! strict mode, and index it by scope (see `index`).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{PolicyId, PolicySet, ValidationMode, Validator};
use miette::Diagnostic;

use crate::PolicyError;
use crate::error::DocProblem;
use crate::index::Index;
use crate::schema::schema;

/// One stored policy document. It may hold several Cedar policies.
///
/// Each policy gets the id `<doc id>` when the document holds exactly one
/// policy, and `<doc id>#N` (N = 1, 2, ... in document order) otherwise. Cedar
/// `@id(...)` annotations are kept but are not used as ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyDoc<'a> {
    /// Document id: non-empty, no `#`, no whitespace, unique in a set.
    pub id: &'a str,
    /// Cedar policy text.
    pub text: &'a str,
}

/// A validated policy set, plus the same policies indexed by scope.
#[derive(Debug)]
pub(crate) struct Compiled {
    /// Every policy.
    pub all: PolicySet,
    /// Policy ids in document order.
    pub order: Vec<PolicyId>,
    /// The policies bucketed by app, principal and action.
    pub index: Index,
}

/// Parses and validates policy documents without building an engine; the
/// error lists every problem in every document.
pub fn validate(docs: &[PolicyDoc<'_>]) -> Result<(), PolicyError> {
    compile_docs(docs).map(|_| ())
}

pub(crate) fn compile_docs(docs: &[PolicyDoc<'_>]) -> Result<Compiled, PolicyError> {
    let schema = schema()?;
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut all = PolicySet::new();
    let mut order = Vec::new();
    // policy id -> index of its document
    let mut owner: HashMap<PolicyId, usize> = HashMap::new();

    for (index, doc) in docs.iter().enumerate() {
        if let Some(reason) = bad_doc_id(doc.id) {
            problems.push(problem(doc, None, None, reason));
            continue;
        }
        if !seen.insert(doc.id) {
            problems.push(problem(
                doc,
                None,
                None,
                "another document has the same id; document ids must be unique".to_owned(),
            ));
            continue;
        }
        let parsed = match PolicySet::from_str(doc.text) {
            Ok(parsed) => parsed,
            Err(errors) => {
                for error in errors.iter() {
                    problems.push(diagnostic_problem(doc, None, error));
                }
                continue;
            }
        };
        if parsed.num_of_templates() > 0 {
            problems.push(problem(
                doc,
                None,
                None,
                "policy templates (with ?principal or ?resource slots) are not supported; \
                 write the entity into the policy instead"
                    .to_owned(),
            ));
            continue;
        }
        let count = parsed.num_of_policies();
        for n in 0..count {
            // `PolicySet::from_str` names the policies policy0, policy1, ...
            // in document order.
            let Some(policy) = parsed.policy(&PolicyId::new(format!("policy{n}"))) else {
                problems.push(problem(
                    doc,
                    None,
                    None,
                    format!("internal error: policy number {n} of {count} not found after parsing"),
                ));
                continue;
            };
            let id = if count == 1 {
                PolicyId::new(doc.id)
            } else {
                PolicyId::new(format!("{}#{}", doc.id, n + 1))
            };
            if let Err(e) = all.add(policy.new_id(id.clone())) {
                problems.push(problem(doc, Some(id.to_string()), None, e.to_string()));
                continue;
            }
            owner.insert(id.clone(), index);
            order.push(id);
        }
    }

    let validator = Validator::new(schema.clone());
    let result = validator.validate(&all, ValidationMode::Strict);
    let mut validation_problems: Vec<(usize, DocProblem)> = result
        .validation_errors()
        .filter_map(|error| {
            let index = *owner.get(error.policy_id())?;
            let doc = docs.get(index)?;
            Some((
                index,
                diagnostic_problem(doc, Some(error.policy_id().to_string()), error),
            ))
        })
        .collect();
    // The validator reports in no fixed order.
    validation_problems.sort_by(|(a, pa), (b, pb)| {
        (a, pa.location, &pa.message).cmp(&(b, pb.location, &pb.message))
    });
    problems.extend(validation_problems.into_iter().map(|(_, p)| p));

    if !problems.is_empty() {
        return Err(PolicyError::Invalid { problems });
    }
    let index = Index::build(&all, &order);
    Ok(Compiled { all, order, index })
}

fn bad_doc_id(id: &str) -> Option<String> {
    if id.is_empty() {
        Some("the document id is empty; give every policy document a name".to_owned())
    } else if id.contains('#') {
        Some("the document id contains '#', which is reserved for numbering the policies in a document".to_owned())
    } else if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("the document id contains whitespace or control characters".to_owned())
    } else {
        None
    }
}

fn problem(
    doc: &PolicyDoc<'_>,
    policy_id: Option<String>,
    location: Option<(usize, usize)>,
    message: String,
) -> DocProblem {
    DocProblem {
        doc_id: doc.id.to_owned(),
        policy_id,
        location,
        message,
    }
}

/// Turns a Cedar parser or validator diagnostic into a problem with the
/// message, Cedar's help text and the line and column in the document.
fn diagnostic_problem(
    doc: &PolicyDoc<'_>,
    policy_id: Option<String>,
    diagnostic: &(impl Diagnostic + ?Sized),
) -> DocProblem {
    let mut message = diagnostic.to_string();
    let label = diagnostic.labels().and_then(|mut labels| labels.next());
    if let Some(text) = label.as_ref().and_then(|l| l.label()) {
        message.push_str(" (");
        message.push_str(text);
        message.push(')');
    }
    if let Some(help) = diagnostic.help() {
        message.push_str(" (hint: ");
        message.push_str(&help.to_string());
        message.push(')');
    }
    let location = label.and_then(|label| line_column(doc.text, label.offset()));
    problem(doc, policy_id, location, message)
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> Option<(usize, usize)> {
    let before = text.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..)?.chars().count() + 1;
    Some((line, column))
}
