//! Flash messages: shown once, after a redirect, to exactly one request.
//!
//! A flash lives in the session's data under a reserved name, each with a random id. Adding one
//! is an ordinary logged update (replayed on conflict, so none is lost). Taking them cannot wait
//! for the end of the request: the response that shows them is written before `finish`, and two
//! concurrent requests must not both show the same message. So [`Core::take_flashes`] removes
//! the stored flashes at once with its own compare-and-set, and returns exactly the ones its
//! save removed; the request's other changes still go through `finish` as usual, on top of it.

use serde::{Deserialize, Serialize};

use super::{Base, Core, Op, State};
use crate::error::{Error, Result};
use crate::record::Record;

/// The data name flashes are kept under (a control character: no app key collides with it).
pub(crate) const FLASH_KEY: &str = "\u{1}flash";

/// How a flash message should be shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashLevel {
    /// Neutral information.
    Info,
    /// Something worked.
    Success,
    /// Something needs attention.
    Warning,
    /// Something failed.
    Error,
}

/// A message for the next page the user sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flash {
    /// How to show it.
    pub level: FlashLevel,
    /// What it says (plain text: escape it when rendering HTML).
    pub text: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Stored {
    id: u64,
    level: FlashLevel,
    text: String,
}

fn parse(record: &Record) -> Vec<Stored> {
    record
        .data
        .get(FLASH_KEY)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

fn value_err(source: serde_json::Error) -> Error {
    Error::Value {
        key: FLASH_KEY.to_owned(),
        source,
    }
}

/// `record` without the flashes whose ids are in `taken`.
pub(crate) fn without(record: &mut Record, taken: &[u64]) -> Result<()> {
    let left: Vec<Stored> = parse(record)
        .into_iter()
        .filter(|f| !taken.contains(&f.id))
        .collect();
    if left.is_empty() {
        record.data.remove(FLASH_KEY);
    } else {
        let json = serde_json::to_string(&left).map_err(value_err)?;
        record.data.set(FLASH_KEY, &json)?;
    }
    Ok(())
}

/// The logged operation that adds `flash`.
pub(crate) fn add_op(level: FlashLevel, text: String) -> Result<Op> {
    let mut id = [0u8; 8];
    crate::id::fill_random(&mut id)?;
    let flash = Stored {
        id: u64::from_le_bytes(id),
        level,
        text,
    };
    Ok(Op::Update(
        FLASH_KEY.to_owned(),
        Box::new(move |_, cur| {
            let mut all: Vec<Stored> = cur
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default();
            all.push(flash.clone());
            serde_json::to_string(&all).map_err(value_err)
        }),
    ))
}

impl Core {
    /// Takes the session's flashes: the stored ones with an immediate compare-and-set (so a
    /// concurrent request cannot take them too), and those this request added itself.
    pub(crate) async fn take_flashes(&self, st: &mut State) -> Result<Vec<Flash>> {
        let mut taken: Vec<Stored> = Vec::new();
        if let Some(current) = &st.current {
            let key = current.key;
            // The record the request's own operations build on from here on: what was just
            // saved, or (nothing to take) what is stored now. Either way the view is rebuilt
            // on it, so flashes the request loaded but another request took are not shown.
            let mut saved = None;
            let mut attempts = 0;
            let mut lost_every_race = false;
            while attempts < self.config.max_retries {
                attempts += 1;
                lost_every_race = false;
                let Some(fresh) = self.load_record(&key, st.now).await? else {
                    break;
                };
                if fresh.successor().is_some() {
                    break;
                }
                let stored = parse(&fresh);
                if stored.is_empty() {
                    saved = Some(fresh);
                    break;
                }
                let ids: Vec<u64> = stored.iter().map(|f| f.id).collect();
                let mut next = fresh.clone();
                without(&mut next, &ids)?;
                next.version = fresh.version + 1;
                match self.save_record(&key, &next, fresh.version).await {
                    Ok(()) => {
                        taken = stored;
                        saved = Some(next);
                        break;
                    }
                    Err(Error::Conflict) => {
                        lost_every_race = true;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some(base) = saved else {
                // Gone or rotated away meanwhile: nothing here is this request's to show.
                return if lost_every_race {
                    Err(Error::Contention(attempts))
                } else {
                    Ok(Vec::new())
                };
            };
            let mut view = base.clone();
            for op in &st.ops {
                op.apply(&mut view)?;
            }
            without(&mut view, &taken.iter().map(|f| f.id).collect::<Vec<_>>())?;
            if let Some(current) = st.current.as_mut() {
                current.base = Base::of(&base);
            }
            st.view = view;
        }
        // Flashes this request added (not stored yet): take them from its own log.
        let own = parse(&st.view);
        if !own.is_empty() {
            st.record(Op::DropFlashes(own.iter().map(|f| f.id).collect()))?;
            taken.extend(own);
        }
        Ok(taken
            .into_iter()
            .map(|f| Flash {
                level: f.level,
                text: f.text,
            })
            .collect())
    }
}
