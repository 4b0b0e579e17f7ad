//! What the engine hands a journal: one record per state change of a tenant, numbered by
//! the tenant's sequence, holding what a replay needs to make exactly the same change
//! through the same rules: the command and its parameters, the time it ran at, and the
//! random values it drew (call ids, leg and session ids, queue ids). Timers are not
//! recorded as what they did but as the instant they were fired at: the same state fires
//! the same timers.
//!
//! The engine knows no store: [`Journal`] is the seam (the `waitline-store` crate keeps
//! records in SQLite), and [`crate::Tenant::replay`] feeds records back in.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::Timestamp;
use crate::params::{
    BridgeParams, CommandOptions, DialParams, EnqueueParams, QueueCallUpdate, TransferParams,
};

/// Where the engine sends its records (see [`crate::EngineBuilder::journal`]).
///
/// `append` is called under the tenant's lock, in the order of the tenant's sequence, once
/// per number: it must only queue the bytes (never wait for a disk). It cannot refuse: a
/// store that fails says so to whoever waits for the record to be durable, and the frontend
/// must then stop acknowledging.
pub trait Journal: Send + Sync + fmt::Debug {
    /// Record number `seq` of `tenant`.
    fn append(&self, tenant: &str, seq: u64, record: &[u8]);
}

/// Bytes reserved for an encoded record: more than most records take, so that encoding
/// one allocates once.
const ENCODED_CAPACITY: usize = 256;

/// One state change of a tenant, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When the command ran (the time it read from the clock), in microseconds since the
    /// Unix epoch.
    pub at_micros: u64,
    /// The random values the command drew, in the order it drew them.
    pub draws: Vec<Uuid>,
    /// What ran.
    pub change: Change,
}

/// The command behind a record. Variants are only ever added at the end: a record names its
/// variant by position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
// Built only for a record, one at a time, and encoded at once: the size of the largest
// variant costs nothing worth a box per record.
#[allow(clippy::large_enum_variant)]
pub enum Change {
    /// [`crate::Tenant::dial`].
    Dial(DialParams),
    /// [`crate::Tenant::enqueue`].
    Enqueue {
        /// The call.
        call: String,
        /// Its parameters.
        params: EnqueueParams,
    },
    /// [`crate::Tenant::leave_queue`].
    LeaveQueue {
        /// The call.
        call: String,
        /// Its options.
        options: CommandOptions,
    },
    /// [`crate::Tenant::bridge`].
    Bridge {
        /// The call.
        call: String,
        /// Its parameters.
        params: BridgeParams,
    },
    /// [`crate::Tenant::hangup`].
    Hangup {
        /// The call.
        call: String,
        /// Its options.
        options: CommandOptions,
    },
    /// [`crate::Tenant::transfer`].
    Transfer {
        /// The call.
        call: String,
        /// Its parameters.
        params: TransferParams,
    },
    /// [`crate::Tenant::create_queue`].
    CreateQueue {
        /// The queue.
        name: String,
        /// Its size cap.
        max_size: Option<u32>,
    },
    /// [`crate::Tenant::update_queue`].
    UpdateQueue {
        /// The queue.
        name: String,
        /// Its new size cap.
        max_size: u32,
    },
    /// [`crate::Tenant::delete_queue`].
    DeleteQueue {
        /// The queue.
        name: String,
    },
    /// [`crate::Tenant::update_queue_call`].
    UpdateQueueCall {
        /// The queue.
        queue: String,
        /// The member.
        call: String,
        /// The changes.
        update: QueueCallUpdate,
    },
    /// [`crate::Tenant::remove_queue_call`].
    RemoveQueueCall {
        /// The queue.
        queue: String,
        /// The member.
        call: String,
    },
    /// The tenant's timers due at the record's time fired (before a command, or in
    /// maintenance). One firing run may take several numbers, each with a record of its
    /// own: replaying the first makes them all.
    Timers,
    /// [`crate::Tenant::dial`] with a `command_id` (after the variants that were there
    /// before dial took one, so that their records still read).
    DialWithCommandId {
        /// The parameters but the `command_id` (which [`DialParams`] does not record).
        params: DialParams,
        /// The `command_id`.
        command_id: String,
    },
}

impl Record {
    /// The record's time.
    #[must_use]
    pub const fn at(&self) -> Timestamp {
        Timestamp::from_micros(self.at_micros)
    }

    /// The bytes a journal keeps.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        // Room for most records at once: grown from empty, the Vec was reallocated several
        // times a record (~750 instructions of an enqueue's ~2,400 for its journal).
        // Serialising plain data into a Vec cannot fail.
        postcard::to_extend(self, Vec::with_capacity(ENCODED_CAPACITY)).unwrap_or_default()
    }

    /// A record from the bytes [`Record::encode`] made.
    ///
    /// # Errors
    /// [`ReplayError::Decode`] when the bytes are not a record.
    pub fn decode(bytes: &[u8]) -> Result<Self, ReplayError> {
        postcard::from_bytes(bytes).map_err(|e| ReplayError::Decode(e.to_string()))
    }
}

/// Why a record could not be replayed. Each means the journal and the engine disagree, so
/// the state after it cannot be trusted: stop, do not go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The bytes are not a record of this version.
    #[error("not a record: {0}")]
    Decode(String),
    /// The record's number is not the tenant's next one.
    #[error("record {got} does not follow the tenant's last change {last}")]
    OutOfOrder {
        /// The record's number.
        got: u64,
        /// The tenant's last number.
        last: u64,
    },
    /// Replaying the record did not make exactly one change numbered as the record.
    #[error(
        "record {seq} ({change}) replayed into changes up to {reached}: the journal and the rules disagree"
    )]
    Diverged {
        /// The record's number.
        seq: u64,
        /// What it was.
        change: &'static str,
        /// The tenant's last number after replaying it.
        reached: u64,
    },
}

impl Change {
    /// The command's name, for messages.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Dial(_) | Self::DialWithCommandId { .. } => "dial",
            Self::Enqueue { .. } => "enqueue",
            Self::LeaveQueue { .. } => "leave_queue",
            Self::Bridge { .. } => "bridge",
            Self::Hangup { .. } => "hangup",
            Self::Transfer { .. } => "transfer",
            Self::CreateQueue { .. } => "create_queue",
            Self::UpdateQueue { .. } => "update_queue",
            Self::DeleteQueue { .. } => "delete_queue",
            Self::UpdateQueueCall { .. } => "update_queue_call",
            Self::RemoveQueueCall { .. } => "remove_queue_call",
            Self::Timers => "timers",
        }
    }
}

/// What a replayed command must reproduce.
#[derive(Debug)]
pub(crate) struct Replaying {
    pub(crate) at: Timestamp,
    pub(crate) draws: Vec<Uuid>,
}
