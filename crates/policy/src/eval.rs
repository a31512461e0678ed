//! Evaluating policy conditions without Cedar's per-request overheads, with
//! exactly Cedar's results.
//!
//! Cedar's evaluator re-runs extension constructors on every evaluation:
//! `duration("9h")` goes through a regular expression and `ip("10.0.0.0/8")`
//! through an address parser each time a policy is evaluated, and every step
//! moves a large `Result<PartialValue>` and clones source locations. Here a
//! condition is compiled once into a [`Node`] tree in which extension calls
//! with constant arguments, and sets and records of constants, are already
//! values, and evaluation borrows values instead of cloning them.
//!
//! The fast path only ever answers when Cedar would give the same answer: it
//! follows Cedar's evaluation order and short-circuiting, calls Cedar's own
//! extension functions and comparison, and gives up ([`Fallback`]) on
//! anything Cedar would report as an error and on every construct it does
//! not implement (template slots, unknowns, entity tags, very deep
//! expressions). The caller then evaluates the policy with Cedar's
//! evaluator, so errors and their messages are Cedar's. Tests compare both
//! paths on many requests.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use cedar_policy::pst::SmolStr;
use cedar_policy_core::ast::{
    BinaryOp, Entity, EntityType, EntityUID, Expr, ExprKind, ExtensionFunction, Literal,
    PartialValue, Pattern, UnaryOp, Value, ValueKind, Var,
};
use cedar_policy_core::evaluator::binary_relation;
use cedar_policy_core::extensions::Extensions;

/// Deepest expression the fast path evaluates; deeper conditions go to
/// Cedar, whose evaluator checks the remaining stack at every level.
const MAX_DEPTH: usize = 64;

/// The fast path cannot answer (Cedar would report an error, or the
/// construct is not implemented here): evaluate the policy with Cedar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fallback;

type Eval<'a> = Result<Cow<'a, Value>, Fallback>;

/// A compiled expression.
#[derive(Debug)]
pub(crate) enum Node {
    /// A literal, or a constant computed at compile time.
    Const(Value),
    Var(Var),
    If(Box<[Node; 3]>),
    And(Box<[Node; 2]>),
    Or(Box<[Node; 2]>),
    Unary(UnaryOp, Box<Node>),
    Binary(BinaryOp, Box<[Node; 2]>),
    Call(&'static ExtensionFunction, Vec<Node>),
    GetAttr(Box<Node>, SmolStr),
    HasAttr(Box<Node>, SmolStr),
    /// `e has a.b.c`
    HasPath(Box<Node>, Vec<SmolStr>),
    Like(Box<Node>, Pattern),
    Is(Box<Node>, EntityType),
    Set(Vec<Node>),
    Record(Vec<(SmolStr, Node)>),
    /// Not implemented here: always [`Fallback`].
    Cedar,
}

/// One request as the fast path sees it: the same values and entities the
/// Cedar request built from the same facts holds.
pub(crate) struct Env<'a> {
    pub principal: &'a Value,
    pub action: &'a Value,
    pub resource: &'a Value,
    pub context: &'a Value,
    /// The entities built for this request (user and app).
    pub request_entities: [&'a Entity; 2],
    /// The entities every request has (the actions). With the request's
    /// own, these are exactly the entities of Cedar's store; their uids are
    /// distinct, so a linear search finds what Cedar's map finds.
    pub shared_entities: &'a [Entity],
}

impl Env<'_> {
    fn entity(&self, uid: &EntityUID) -> Option<&Entity> {
        self.request_entities
            .into_iter()
            .chain(self.shared_entities)
            .find(|e| e.uid() == uid)
    }
}

fn truth(value: &Value) -> Result<bool, Fallback> {
    match value.value_kind() {
        ValueKind::Lit(Literal::Bool(b)) => Ok(*b),
        _ => Err(Fallback),
    }
}

fn long(value: &Value) -> Result<i64, Fallback> {
    match value.value_kind() {
        ValueKind::Lit(Literal::Long(i)) => Ok(*i),
        _ => Err(Fallback),
    }
}

fn entity_uid(value: &Value) -> Result<&EntityUID, Fallback> {
    match value.value_kind() {
        ValueKind::Lit(Literal::EntityUID(uid)) => Ok(uid),
        _ => Err(Fallback),
    }
}

fn set(value: &Value) -> Result<&cedar_policy_core::ast::Set, Fallback> {
    match value.value_kind() {
        ValueKind::Set(set) => Ok(set),
        _ => Err(Fallback),
    }
}

/// A value borrowed from `parent` when it is borrowed, cloned otherwise.
fn project<'a>(
    parent: Cow<'a, Value>,
    pick: impl for<'v> Fn(&'v Value) -> Result<&'v Value, Fallback>,
) -> Eval<'a> {
    match parent {
        Cow::Borrowed(value) => pick(value).map(Cow::Borrowed),
        Cow::Owned(value) => pick(&value).map(|v| Cow::Owned(v.clone())),
    }
}

impl Node {
    /// Compiles an expression of a static policy.
    pub(crate) fn compile(expr: &Expr) -> Node {
        if depth(expr) > MAX_DEPTH {
            return Node::Cedar;
        }
        Self::build(expr)
    }

    fn build(expr: &Expr) -> Node {
        let pair = |a: &Expr, b: &Expr| Box::new([Self::build(a), Self::build(b)]);
        let one = |a: &Expr| Box::new(Self::build(a));
        match expr.expr_kind() {
            ExprKind::Lit(lit) => Node::Const(Value::from(lit.clone())),
            ExprKind::Var(var) => Node::Var(*var),
            ExprKind::If {
                test_expr,
                then_expr,
                else_expr,
            } => Node::If(Box::new([
                Self::build(test_expr),
                Self::build(then_expr),
                Self::build(else_expr),
            ])),
            ExprKind::And { left, right } => Node::And(pair(left, right)),
            ExprKind::Or { left, right } => Node::Or(pair(left, right)),
            ExprKind::UnaryApp { op, arg } => Node::Unary(*op, one(arg)),
            ExprKind::BinaryApp { op, arg1, arg2 } => match op {
                BinaryOp::GetTag | BinaryOp::HasTag => Node::Cedar,
                _ => Node::Binary(*op, pair(arg1, arg2)),
            },
            ExprKind::ExtensionFunctionApp { fn_name, args } => {
                let Ok(function) = Extensions::all_available().func(fn_name) else {
                    return Node::Cedar;
                };
                let args: Vec<Node> = args.iter().map(Self::build).collect();
                // Extension functions are pure: a call with constant
                // arguments that succeeds is a constant. One that fails is
                // left to fail (and fall back) at evaluation time.
                if let Some(values) = constants(&args)
                    && let Ok(PartialValue::Value(value)) = function.call(&values)
                {
                    return Node::Const(value);
                }
                Node::Call(function, args)
            }
            ExprKind::GetAttr { expr, attr } => Node::GetAttr(one(expr), attr.clone()),
            ExprKind::HasAttr { expr, attr } => Node::HasAttr(one(expr), attr.clone()),
            ExprKind::ExtHasAttr { expr, attrs } => {
                Node::HasPath(one(expr), attrs.iter().cloned().collect())
            }
            ExprKind::Like { expr, pattern } => Node::Like(one(expr), pattern.clone()),
            ExprKind::Is { expr, entity_type } => Node::Is(one(expr), entity_type.clone()),
            ExprKind::Set(items) => {
                let items: Vec<Node> = items.iter().map(Self::build).collect();
                match constants(&items) {
                    Some(values) => Node::Const(Value::set(values, None)),
                    None => Node::Set(items),
                }
            }
            ExprKind::Record(fields) => {
                let fields: Vec<(SmolStr, Node)> = fields
                    .iter()
                    .map(|(k, v)| (k.clone(), Self::build(v)))
                    .collect();
                match constants(fields.iter().map(|(_, v)| v)) {
                    Some(values) => Node::Const(Value::record(
                        fields.iter().map(|(k, _)| k.clone()).zip(values),
                        None,
                    )),
                    None => Node::Record(fields),
                }
            }
            // Template slots, unknowns (partial evaluation) and anything
            // added to Cedar later.
            _ => Node::Cedar,
        }
    }

    /// Evaluates a policy condition to a boolean, as Cedar's evaluator
    /// would, or gives up.
    pub(crate) fn holds(&self, env: &Env<'_>) -> Result<bool, Fallback> {
        match self {
            Node::And(pair) => {
                let [left, right] = pair.as_ref();
                Ok(left.holds(env)? && right.holds(env)?)
            }
            Node::Or(pair) => {
                let [left, right] = pair.as_ref();
                Ok(left.holds(env)? || right.holds(env)?)
            }
            Node::Unary(UnaryOp::Not, arg) => Ok(!arg.holds(env)?),
            Node::Binary(op, args) => {
                let [a, b] = args.as_ref();
                let (a, b) = (a.eval(env)?, b.eval(env)?);
                binary_bool(*op, &a, &b, env)
            }
            Node::HasAttr(expr, attr) => has_attr(&*expr.eval(env)?, attr, env),
            Node::HasPath(expr, attrs) => has_path(&*expr.eval(env)?, attrs, env),
            Node::Like(expr, pattern) => match expr.eval(env)?.value_kind() {
                ValueKind::Lit(Literal::String(s)) => Ok(pattern.wildcard_match(s)),
                _ => Err(Fallback),
            },
            Node::Is(expr, entity_type) => {
                Ok(entity_uid(&*expr.eval(env)?)?.entity_type() == entity_type)
            }
            _ => truth(&*self.eval(env)?),
        }
    }

    fn eval<'a>(&'a self, env: &'a Env<'a>) -> Eval<'a> {
        let boolean = |b: bool| Ok(Cow::Owned(Value::from(b)));
        match self {
            Node::Const(value) => Ok(Cow::Borrowed(value)),
            Node::Var(Var::Principal) => Ok(Cow::Borrowed(env.principal)),
            Node::Var(Var::Action) => Ok(Cow::Borrowed(env.action)),
            Node::Var(Var::Resource) => Ok(Cow::Borrowed(env.resource)),
            Node::Var(Var::Context) => Ok(Cow::Borrowed(env.context)),
            Node::If(parts) => {
                let [test, then, otherwise] = parts.as_ref();
                if test.holds(env)? {
                    then.eval(env)
                } else {
                    otherwise.eval(env)
                }
            }
            Node::And(_)
            | Node::Or(_)
            | Node::HasAttr(..)
            | Node::HasPath(..)
            | Node::Like(..)
            | Node::Is(..) => boolean(self.holds(env)?),
            Node::Unary(op, arg) => {
                let arg = arg.eval(env)?;
                match op {
                    UnaryOp::Not => boolean(!truth(&arg)?),
                    UnaryOp::Neg => long(&arg)?
                        .checked_neg()
                        .map(|v| Cow::Owned(Value::from(v)))
                        .ok_or(Fallback),
                    UnaryOp::IsEmpty => boolean(set(&arg)?.is_empty()),
                }
            }
            Node::Binary(op, args) => {
                let [a, b] = args.as_ref();
                let (a, b) = (a.eval(env)?, b.eval(env)?);
                let arith = |f: fn(i64, i64) -> Option<i64>| {
                    f(long(&a)?, long(&b)?)
                        .map(|v| Cow::Owned(Value::from(v)))
                        .ok_or(Fallback)
                };
                match op {
                    BinaryOp::Add => arith(i64::checked_add),
                    BinaryOp::Sub => arith(i64::checked_sub),
                    BinaryOp::Mul => arith(i64::checked_mul),
                    _ => boolean(binary_bool(*op, &a, &b, env)?),
                }
            }
            Node::Call(function, args) => {
                let value = |arg: &'a Node| arg.eval(env).map(Cow::into_owned);
                // Methods such as `isInRange` take two arguments: no
                // allocation for up to two.
                let result = match args.as_slice() {
                    [] => function.call(&[]),
                    [a] => function.call(&[value(a)?]),
                    [a, b] => function.call(&[value(a)?, value(b)?]),
                    _ => function.call(
                        &args
                            .iter()
                            .map(value)
                            .collect::<Result<Vec<Value>, Fallback>>()?,
                    ),
                };
                match result {
                    Ok(PartialValue::Value(value)) => Ok(Cow::Owned(value)),
                    Ok(PartialValue::Residual(_)) | Err(_) => Err(Fallback),
                }
            }
            Node::GetAttr(expr, attr) => {
                let parent = expr.eval(env)?;
                if let ValueKind::Lit(Literal::EntityUID(uid)) = parent.value_kind() {
                    // The attribute lives in the request's entities, not in
                    // the (possibly temporary) parent value.
                    return match env.entity(uid).and_then(|e| e.get(attr)) {
                        Some(PartialValue::Value(value)) => Ok(Cow::Borrowed(value)),
                        Some(PartialValue::Residual(_)) | None => Err(Fallback),
                    };
                }
                project(parent, |value| match value.value_kind() {
                    ValueKind::Record(record) => record.get(attr).ok_or(Fallback),
                    _ => Err(Fallback),
                })
            }
            Node::Set(items) => {
                let values = items
                    .iter()
                    .map(|item| item.eval(env).map(Cow::into_owned))
                    .collect::<Result<Vec<Value>, Fallback>>()?;
                Ok(Cow::Owned(Value::set(values, None)))
            }
            Node::Record(fields) => {
                let record = fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.eval(env)?.into_owned())))
                    .collect::<Result<BTreeMap<SmolStr, Value>, Fallback>>()?;
                Ok(Cow::Owned(Value::record_arc(Arc::new(record), None)))
            }
            Node::Cedar => Err(Fallback),
        }
    }
}

/// `==`, `<`, `<=`, `in`, `contains`, `containsAll`, `containsAny`.
fn binary_bool(op: BinaryOp, a: &Value, b: &Value, env: &Env<'_>) -> Result<bool, Fallback> {
    match op {
        BinaryOp::Eq => Ok(a == b),
        BinaryOp::Less | BinaryOp::LessEq => match (a.value_kind(), b.value_kind()) {
            (ValueKind::Lit(Literal::Long(x)), ValueKind::Lit(Literal::Long(y))) => {
                Ok(if op == BinaryOp::Less { x < y } else { x <= y })
            }
            // Extension types (duration, datetime, decimal) and every type
            // error: Cedar's own comparison.
            _ => binary_relation(op, a, b, Extensions::all_available())
                .map_err(|_| Fallback)
                .and_then(|v| truth(&v)),
        },
        BinaryOp::In => {
            let uid = entity_uid(a)?;
            let entity = env.entity(uid);
            let within = |ancestor: &EntityUID| {
                uid == ancestor || entity.is_some_and(|e| e.is_descendant_of(ancestor))
            };
            match b.value_kind() {
                ValueKind::Lit(Literal::EntityUID(ancestor)) => Ok(within(ancestor)),
                ValueKind::Set(ancestors) => {
                    // Cedar checks that every element is an entity before
                    // looking for a match.
                    let ancestors = ancestors
                        .iter()
                        .map(entity_uid)
                        .collect::<Result<Vec<_>, Fallback>>()?;
                    Ok(ancestors.into_iter().any(within))
                }
                _ => Err(Fallback),
            }
        }
        BinaryOp::Contains => Ok(set(a)?.contains(b)),
        BinaryOp::ContainsAll => {
            let (a, b) = (set(a)?, set(b)?);
            Ok(b.is_subset(a))
        }
        BinaryOp::ContainsAny => {
            let (a, b) = (set(a)?, set(b)?);
            Ok(!a.is_disjoint(b))
        }
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::GetTag | BinaryOp::HasTag => {
            Err(Fallback)
        }
    }
}

fn has_attr(value: &Value, attr: &SmolStr, env: &Env<'_>) -> Result<bool, Fallback> {
    match value.value_kind() {
        ValueKind::Record(record) => Ok(record.contains_key(attr)),
        ValueKind::Lit(Literal::EntityUID(uid)) => {
            Ok(env.entity(uid).is_some_and(|e| e.get(attr).is_some()))
        }
        _ => Err(Fallback),
    }
}

/// `value has a.b.c`: `value has a && value.a has b && value.a.b has c`.
fn has_path(value: &Value, attrs: &[SmolStr], env: &Env<'_>) -> Result<bool, Fallback> {
    let mut current = value;
    for (n, attr) in attrs.iter().enumerate() {
        let next = match current.value_kind() {
            ValueKind::Record(record) => record.get(attr),
            ValueKind::Lit(Literal::EntityUID(uid)) => {
                match env.entity(uid).and_then(|e| e.get(attr)) {
                    Some(PartialValue::Value(value)) => Some(value),
                    Some(PartialValue::Residual(_)) => return Err(Fallback),
                    None => None,
                }
            }
            _ => return Err(Fallback),
        };
        let Some(next) = next else {
            return Ok(false);
        };
        if n + 1 < attrs.len() {
            current = next;
        }
    }
    Ok(true)
}

/// The values of `nodes` when all are constants.
fn constants<'n>(nodes: impl IntoIterator<Item = &'n Node>) -> Option<Vec<Value>> {
    nodes
        .into_iter()
        .map(|node| match node {
            Node::Const(value) => Some(value.clone()),
            _ => None,
        })
        .collect()
}

/// Nesting depth of an expression.
fn depth(expr: &Expr) -> usize {
    1 + match expr.expr_kind() {
        ExprKind::If {
            test_expr,
            then_expr,
            else_expr,
        } => depth(test_expr).max(depth(then_expr)).max(depth(else_expr)),
        ExprKind::And { left, right } | ExprKind::Or { left, right } => {
            depth(left).max(depth(right))
        }
        ExprKind::UnaryApp { arg, .. } => depth(arg),
        ExprKind::BinaryApp { arg1, arg2, .. } => depth(arg1).max(depth(arg2)),
        ExprKind::ExtensionFunctionApp { args, .. } | ExprKind::Set(args) => {
            args.iter().map(depth).max().unwrap_or(0)
        }
        ExprKind::GetAttr { expr, .. }
        | ExprKind::HasAttr { expr, .. }
        | ExprKind::ExtHasAttr { expr, .. }
        | ExprKind::Like { expr, .. }
        | ExprKind::Is { expr, .. } => depth(expr),
        ExprKind::Record(fields) => fields.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
