//! The versioned envelope and its MessagePack codec.
//!
//! Every message on every cairn stream is an envelope: the body's type name and schema
//! version, the message id, the causing command id, the time the message was decided, and
//! the body itself as nested MessagePack with named fields. Readers first decode the
//! envelope, then the body by its type name, so an unknown type or a newer version is a
//! typed error a reader can report and skip. Nothing here panics on any input.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ids::CommandId;
use crate::time::Timestamp;

/// Why bytes could not become a message, or a message could not become bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("not a cairn envelope: {0}")]
    Malformed(String),
    #[error("unknown message type {type_name:?}")]
    UnknownType { type_name: String },
    #[error("{type_name} schema version {version} is newer than this build reads (up to {known})")]
    NewerVersion {
        type_name: String,
        version: u16,
        known: u16,
    },
    #[error("malformed {type_name} body: {reason}")]
    MalformedBody { type_name: String, reason: String },
    #[error("cannot encode {type_name}: {reason}")]
    Encode { type_name: String, reason: String },
}

impl Error {
    /// Decoding the same bytes again gives the same answer: no codec error is retryable.
    pub const fn is_retryable(&self) -> bool {
        false
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A family of message bodies (events, commands, reports, assignments) that travel in an
/// [`Envelope`]. Implemented by the `messages!` macro, never by hand.
pub trait Message: Sized {
    /// The kind of id the envelope carries for this family.
    type Id: Serialize + DeserializeOwned + Copy + std::fmt::Display;

    fn type_name(&self) -> &'static str;
    fn schema_version(&self) -> u16;
    fn encode_body(&self) -> Result<Vec<u8>>;
    fn decode_body(type_name: &str, version: u16, body: &[u8]) -> Result<Self>;
}

/// A message with its metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope<M: Message> {
    pub id: M::Id,
    /// The command that caused this message, when there was one.
    pub causation: Option<CommandId>,
    /// When the message was decided (events) or issued (commands, reports).
    pub at: Timestamp,
    pub body: M,
}

#[derive(Serialize, Deserialize)]
struct Wire<'a, I> {
    #[serde(rename = "type", borrow)]
    type_name: Cow<'a, str>,
    #[serde(rename = "v")]
    version: u16,
    id: I,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cause: Option<CommandId>,
    at: Timestamp,
    #[serde(with = "serde_bytes", borrow)]
    body: Cow<'a, [u8]>,
}

impl<M: Message> Envelope<M> {
    pub fn new(id: M::Id, causation: Option<CommandId>, at: Timestamp, body: M) -> Self {
        Self {
            id,
            causation,
            at,
            body,
        }
    }

    pub fn type_name(&self) -> &'static str {
        self.body.type_name()
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        let wire = Wire {
            type_name: Cow::Borrowed(self.body.type_name()),
            version: self.body.schema_version(),
            id: self.id,
            cause: self.causation,
            at: self.at,
            body: Cow::Owned(self.body.encode_body()?),
        };
        rmp_serde::to_vec_named(&wire).map_err(|e| Error::Encode {
            type_name: self.body.type_name().to_owned(),
            reason: e.to_string(),
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let wire: Wire<'_, M::Id> =
            rmp_serde::from_slice(bytes).map_err(|e| Error::Malformed(e.to_string()))?;
        let body = M::decode_body(&wire.type_name, wire.version, &wire.body)?;
        Ok(Self {
            id: wire.id,
            causation: wire.cause,
            at: wire.at,
            body,
        })
    }
}

/// Encodes one body struct with named fields. Used by the `messages!` macro.
#[doc(hidden)]
pub fn encode_named<T: Serialize>(type_name: &str, body: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(body).map_err(|e| Error::Encode {
        type_name: type_name.to_owned(),
        reason: e.to_string(),
    })
}

/// Decodes one body struct, refusing versions newer than `known`. Used by `messages!`.
#[doc(hidden)]
pub fn decode_named<T: DeserializeOwned>(
    type_name: &str,
    version: u16,
    known: u16,
    body: &[u8],
) -> Result<T> {
    if version > known {
        return Err(Error::NewerVersion {
            type_name: type_name.to_owned(),
            version,
            known,
        });
    }
    rmp_serde::from_slice(body).map_err(|e| Error::MalformedBody {
        type_name: type_name.to_owned(),
        reason: e.to_string(),
    })
}

/// Declares a message family: an enum whose variants each wrap one body struct, with the
/// type name and current schema version of each. Type names are part of the wire format:
/// never rename one; add a new type instead.
macro_rules! messages {
    (
        $(#[$meta:meta])*
        pub enum $family:ident : id = $id:ty {
            $( $(#[$vmeta:meta])* $variant:ident = ($type_name:literal, $version:literal), )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        // A message lives as long as it takes to decide or project it, and the large ones
        // (a deploy and its spec) are a few per thousand: boxing them would allocate for
        // every event to save bytes nobody keeps.
        #[allow(clippy::large_enum_variant)]
        pub enum $family {
            $( $(#[$vmeta])* $variant($variant), )+
        }

        impl $crate::codec::Message for $family {
            type Id = $id;

            fn type_name(&self) -> &'static str {
                match self { $( Self::$variant(_) => $type_name, )+ }
            }

            fn schema_version(&self) -> u16 {
                match self { $( Self::$variant(_) => $version, )+ }
            }

            fn encode_body(&self) -> $crate::codec::Result<Vec<u8>> {
                match self {
                    $( Self::$variant(body) => $crate::codec::encode_named($type_name, body), )+
                }
            }

            fn decode_body(
                type_name: &str,
                version: u16,
                body: &[u8],
            ) -> $crate::codec::Result<Self> {
                match type_name {
                    $( $type_name => $crate::codec::decode_named(type_name, version, $version, body)
                        .map(Self::$variant), )+
                    other => Err($crate::codec::Error::UnknownType { type_name: other.to_owned() }),
                }
            }
        }

        // A family serializes as its body alone (no tag): the type name travels beside it,
        // in the envelope or in the JSON that shows it.
        impl serde::Serialize for $family {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self { $( Self::$variant(body) => serde::Serialize::serialize(body, s), )+ }
            }
        }

        $(
            impl From<$variant> for $family {
                fn from(body: $variant) -> Self {
                    Self::$variant(body)
                }
            }
        )+

        impl $family {
            /// Every type name of this family, for documentation and exhaustive tests.
            pub const TYPE_NAMES: &'static [&'static str] = &[$($type_name),+];
        }
    };
}
pub(crate) use messages;
