//! What the room asks the shell to deliver: [`Output`], addressed to an [`Audience`].
//!
//! An output is structured (kind, seq, nick, text, ...) and renders to the seed's exact text
//! through [`Display`](std::fmt::Display). It never holds a socket or a recipient list: one
//! broadcast is one output, whatever the room size.

use std::fmt;
use std::sync::Arc;

use crate::{ConnId, Error, Nick};

/// Who receives an [`Output`], resolved against the room's members at the moment the output
/// was produced (drain outputs after every [`Room::handle`](crate::Room::handle) and this is
/// simply "the members now").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Audience {
    /// Every member of the room.
    Everyone,
    /// Every member except this connection (e.g. a join notice, which the joiner does not get).
    EveryoneExcept(ConnId),
    /// Exactly this connection, member or not (welcome, replies, errors).
    Only(ConnId),
}

impl Audience {
    /// Whether `conn`, assumed to be a member, is in this audience.
    pub fn includes(&self, conn: ConnId) -> bool {
        match *self {
            Audience::Everyone => true,
            Audience::EveryoneExcept(other) => other != conn,
            Audience::Only(only) => only == conn,
        }
    }
}

/// What an [`Output`] is. Broadcast kinds (`Message`, `Me`, `Join`, `Leave`, `Nick`) carry a
/// sequence number; the others are replies to one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputKind {
    /// Greeting to a joiner: its nickname and who else is here.
    Welcome,
    /// `NICK: TEXT`.
    Message,
    /// `* NICK TEXT` (`/me`).
    Me,
    /// ` .... NICK has joined.`
    Join,
    /// ` .... NICK has left.`
    Leave,
    /// ` .... OLD is now known as NEW.`
    Nick,
    /// The member list (`/who`).
    Who,
    /// The command list (`/help`).
    Help,
    /// ` .... error: REASON`, to the sender of bad input only.
    Error,
    /// A resume could not be served in full: how many events were lost.
    Gap,
}

impl OutputKind {
    /// A short lower-case name, stable across versions (`"message"`, `"join"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Welcome => "welcome",
            OutputKind::Message => "message",
            OutputKind::Me => "me",
            OutputKind::Join => "join",
            OutputKind::Leave => "leave",
            OutputKind::Nick => "nick",
            OutputKind::Who => "who",
            OutputKind::Help => "help",
            OutputKind::Error => "error",
            OutputKind::Gap => "gap",
        }
    }

    /// Whether outputs of this kind are broadcast room events with a sequence number.
    pub fn is_broadcast(self) -> bool {
        matches!(
            self,
            OutputKind::Message
                | OutputKind::Me
                | OutputKind::Join
                | OutputKind::Leave
                | OutputKind::Nick
        )
    }
}

/// Most nicknames a welcome lists; `/who` lists everyone.
pub const WELCOME_LIST_MAX: usize = 50;

/// The payload of an output. Broadcast bodies are also what history keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Body {
    Message {
        conn: ConnId,
        from: Nick,
        text: Arc<str>,
    },
    Me {
        conn: ConnId,
        from: Nick,
        text: Arc<str>,
    },
    Join {
        conn: ConnId,
        nick: Nick,
    },
    Leave {
        conn: ConnId,
        nick: Nick,
    },
    Nick {
        conn: ConnId,
        old: Nick,
        new: Nick,
    },
    Welcome {
        conn: ConnId,
        nick: Nick,
        /// The first [`WELCOME_LIST_MAX`] members in nickname order, the joiner included.
        members: Arc<[Nick]>,
        member_count: usize,
        commands: bool,
    },
    Who {
        members: Arc<[Nick]>,
    },
    Help,
    Error {
        error: Error,
        reason: Arc<str>,
    },
    Gap {
        lost: u64,
    },
}

/// One thing to deliver: a structured event addressed to an [`Audience`].
///
/// Read it through the getters, or render the seed-compatible text line with
/// [`to_string`](ToString::to_string) / [`fmt::Display`]. Clones share their payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub(crate) audience: Audience,
    pub(crate) seq: Option<u64>,
    pub(crate) replay: bool,
    pub(crate) body: Body,
}

impl Output {
    /// Who receives it.
    pub fn audience(&self) -> Audience {
        self.audience
    }

    /// What it is.
    pub fn kind(&self) -> OutputKind {
        match self.body {
            Body::Message { .. } => OutputKind::Message,
            Body::Me { .. } => OutputKind::Me,
            Body::Join { .. } => OutputKind::Join,
            Body::Leave { .. } => OutputKind::Leave,
            Body::Nick { .. } => OutputKind::Nick,
            Body::Welcome { .. } => OutputKind::Welcome,
            Body::Who { .. } => OutputKind::Who,
            Body::Help => OutputKind::Help,
            Body::Error { .. } => OutputKind::Error,
            Body::Gap { .. } => OutputKind::Gap,
        }
    }

    /// The room's sequence number of a broadcast event (also on replayed ones); `None` for
    /// replies.
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }

    /// Whether this is a past event replayed from history to a joiner.
    pub fn is_replay(&self) -> bool {
        self.replay
    }

    /// The nickname the output is about: the sender of a message or `/me`, the member who
    /// joined or left, the member who renamed (their new nick), the welcomed joiner.
    pub fn nick(&self) -> Option<&Nick> {
        match &self.body {
            Body::Message { from, .. } | Body::Me { from, .. } => Some(from),
            Body::Join { nick, .. } | Body::Leave { nick, .. } | Body::Welcome { nick, .. } => {
                Some(nick)
            }
            Body::Nick { new, .. } => Some(new),
            Body::Who { .. } | Body::Help | Body::Error { .. } | Body::Gap { .. } => None,
        }
    }

    /// The connection the event is about (sender, joiner, leaver, renamer), if any.
    pub fn subject(&self) -> Option<ConnId> {
        match self.body {
            Body::Message { conn, .. }
            | Body::Me { conn, .. }
            | Body::Join { conn, .. }
            | Body::Leave { conn, .. }
            | Body::Nick { conn, .. }
            | Body::Welcome { conn, .. } => Some(conn),
            Body::Who { .. } | Body::Help | Body::Error { .. } | Body::Gap { .. } => None,
        }
    }

    /// The free text: a message's or `/me`'s text, an error's reason.
    pub fn text(&self) -> Option<&str> {
        match &self.body {
            Body::Message { text, .. } | Body::Me { text, .. } => Some(text),
            Body::Error { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// For a rename: the old nickname.
    pub fn old_nick(&self) -> Option<&Nick> {
        match &self.body {
            Body::Nick { old, .. } => Some(old),
            _ => None,
        }
    }

    /// Members in nickname order: all of them for `Who`, the first [`WELCOME_LIST_MAX`] for
    /// `Welcome` (see [`member_count`](Self::member_count) for the total).
    pub fn members(&self) -> Option<&[Nick]> {
        match &self.body {
            Body::Welcome { members, .. } | Body::Who { members } => Some(members),
            _ => None,
        }
    }

    /// How many members the room has, for `Welcome` and `Who`.
    pub fn member_count(&self) -> Option<usize> {
        match &self.body {
            Body::Welcome { member_count, .. } => Some(*member_count),
            Body::Who { members } => Some(members.len()),
            _ => None,
        }
    }

    /// For an `Error` output: which rule the input broke.
    pub fn error(&self) -> Option<Error> {
        match self.body {
            Body::Error { error, .. } => Some(error),
            _ => None,
        }
    }

    /// For a `Gap` output: how many events were missed and are no longer in history.
    pub fn lost(&self) -> Option<u64> {
        match self.body {
            Body::Gap { lost } => Some(lost),
            _ => None,
        }
    }
}

/// Writes `names` separated by `, `.
fn write_list<'a>(
    f: &mut fmt::Formatter<'_>,
    names: impl Iterator<Item = &'a Nick>,
) -> fmt::Result {
    for (i, name) in names.enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        f.write_str(name)?;
    }
    Ok(())
}

/// The seed-compatible text line. Chat lines are `NICK: TEXT` and `* NICK TEXT`; every other
/// line starts with `" .... "`.
impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.body {
            Body::Message { from, text, .. } => write!(f, "{from}: {text}"),
            Body::Me { from, text, .. } => write!(f, "* {from} {text}"),
            Body::Join { nick, .. } => write!(f, " .... {nick} has joined."),
            Body::Leave { nick, .. } => write!(f, " .... {nick} has left."),
            Body::Nick { old, new, .. } => write!(f, " .... {old} is now known as {new}."),
            Body::Welcome {
                nick,
                members,
                member_count,
                commands,
                ..
            } => {
                write!(f, " .... you are {nick}; ")?;
                let others = member_count.saturating_sub(1);
                if others == 0 {
                    f.write_str("nobody else is here yet.")?;
                } else {
                    f.write_str("also here: ")?;
                    let listed = members.iter().filter(|m| *m != nick);
                    let shown = listed.clone().count();
                    write_list(f, listed)?;
                    if others > shown {
                        write!(f, " and {} more", others - shown)?;
                    }
                    f.write_str(".")?;
                }
                if *commands {
                    f.write_str(" Type /help for commands.")?;
                }
                Ok(())
            }
            Body::Who { members } => {
                write!(f, " .... {} here: ", members.len())?;
                write_list(f, members.iter())
            }
            Body::Help => f.write_str(
                " .... commands: /nick NAME to rename, /me TEXT for an action, /who to list \
                 members, /help for this; start with // to send a line beginning with /",
            ),
            Body::Error { reason, .. } => write!(f, " .... error: {reason}"),
            Body::Gap { lost: 1 } => f.write_str(" .... 1 missed event is no longer in history."),
            Body::Gap { lost } => write!(f, " .... {lost} missed events are no longer in history."),
        }
    }
}
