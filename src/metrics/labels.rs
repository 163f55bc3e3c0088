//! The label sets of keysync's metrics, typed: bounded values are enums,
//! so a label can only take a value the metric documents.

use std::fmt::{self, Write as _};

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};

/// A bounded set of label values: an enum, its `label()` and its encoding.
macro_rules! label_values {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $variant:ident => $label:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $variant,)+ }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label value.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label,)+ }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
                encoder.write_str(self.label())
            }
        }
    };
}

label_values! {
    /// How a pass or a write ended.
    pub enum Outcome {
        Ok => "ok",
        Error => "error",
    }
}

label_values! {
    /// Why an unassign was written (see [`crate::witness::Reason`]).
    pub enum UnassignReason {
        Withdrawn => "withdrawn",
        NotInInputs => "not_in_inputs",
        RegistryDrift => "registry_drift",
    }
}

label_values! {
    /// Why unassigns are held back.
    pub enum HeldReason {
        /// More than `--max-deletes` (the guardrail).
        MaxDeletes => "max_deletes",
        /// They would empty the registry.
        EmptyRegistry => "empty_registry",
        /// An input never parsed.
        InputNotRead => "input_not_read",
        /// No synced beacon node confirmed them.
        BeaconNotSynced => "beacon_not_synced",
    }
}

label_values! {
    /// What a plan wants done to a row.
    pub enum PlannedKind {
        Assign => "assign",
        Unassign => "unassign",
    }
}

label_values! {
    /// The `kind` of a registry write.
    pub enum WriteKind {
        Register => "register",
        Assign => "assign",
        Unassign => "unassign",
    }
}

/// A registry write: register and assign rows are counted by kind, each
/// unassign also by why it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Write {
    Register,
    Assign,
    Unassign(UnassignReason),
}

impl Write {
    pub fn kind(self) -> WriteKind {
        match self {
            Write::Register => WriteKind::Register,
            Write::Assign => WriteKind::Assign,
            Write::Unassign(_) => WriteKind::Unassign,
        }
    }

    /// Every write with a series at 0 from the start.
    pub(super) fn all() -> impl Iterator<Item = Write> {
        [Write::Register, Write::Assign]
            .into_iter()
            .chain(UnassignReason::ALL.iter().map(|r| Write::Unassign(*r)))
    }
}

/// How a remote request ended: `ok`, the HTTP status of a failure
/// (`503`), or `transport` (no answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reply {
    Ok,
    Status(u16),
    Transport,
}

impl EncodeLabelValue for Reply {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        match self {
            Reply::Ok => encoder.write_str("ok"),
            Reply::Status(s) => write!(encoder, "{s}"),
            Reply::Transport => encoder.write_str("transport"),
        }
    }
}

// ---- label sets -----------------------------------------------------------

/// `{version}` of `keysync_build_info`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

/// `{result}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: Outcome,
}

/// `{kind,result}` for register and assign; `{kind="unassign",result,reason}`
/// for unassigns. Built by [`WriteLabels::new`] from a [`Write`], so an
/// unassign cannot lack its reason nor another write have one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct WriteLabels {
    kind: WriteKind,
    result: Outcome,
    #[prometheus(flatten)]
    reason: Optional<ReasonOf>,
}

impl WriteLabels {
    pub fn new(write: Write, result: Outcome) -> Self {
        WriteLabels {
            kind: write.kind(),
            result,
            reason: Optional(match write {
                Write::Unassign(reason) => Some(ReasonOf { reason }),
                Write::Register | Write::Assign => None,
            }),
        }
    }
}

/// The `reason` of an unassign.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonOf {
    reason: UnassignReason,
}

/// A label set that is there or not (not one label with an empty value).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Optional<S>(Option<S>);

impl<S: EncodeLabelSet> EncodeLabelSet for Optional<S> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        match &self.0 {
            Some(s) => s.encode(encoder),
            None => Ok(()),
        }
    }
}

/// `{reason}` of held unassigns.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HeldLabels {
    pub reason: HeldReason,
}

/// `{kind}` of planned changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PlannedLabels {
    pub kind: PlannedKind,
}

/// `{topic}` of a beacon event (a fixed name, or `other`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: &'static str,
}

/// `{reason}`: a fixed, short name (a trigger's, an ended stream's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// `{party,call}` of a remote request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub party: &'static str,
    pub call: &'static str,
}

/// `{party,call,outcome}` of a remote request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestOutcomeLabels {
    #[prometheus(flatten)]
    pub request: RequestLabels,
    pub outcome: Reply,
}

// ---- the registry ---------------------------------------------------------
