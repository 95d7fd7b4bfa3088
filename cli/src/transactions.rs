//! `produce --transactional-id`: the input goes out in transactions of
//! `--transaction-size` lines (all of it by default), each committed whole
//! or not at all. A run that stops early aborts the open transaction, so
//! read_committed readers see exactly the transactions committed before.

use std::time::Duration;

use rskafka::{
    client::{
        producer::{Acks, Producer},
        properties::Properties,
    },
    error::ErrorKind,
};

use crate::{
    signals::{Signal, Signals},
    CliError, CliResult,
};

/// Checks, before connecting, that a transactional producer can be built:
/// it needs acks=all and idempotence, whether set by a flag or by `-X`
/// (which overrides the flag).
pub fn check_settings(acks: Acks, idempotent: Option<bool>, props: &Properties) -> CliResult {
    let usage = |why: String| {
        Err(CliError::usage(format!(
            "--transactional-id requires {why}"
        )))
    };
    match props.get("acks") {
        Some("all" | "-1") => {}
        Some(v) => return usage(format!("acks all, not -X acks={v}")),
        None if acks != Acks::All => return usage("--acks all".to_owned()),
        None => {}
    }
    match props.get("enable.idempotence") {
        Some(v) if v.eq_ignore_ascii_case("false") => {
            usage("idempotence, not -X enable.idempotence=false".to_owned())
        }
        Some(_) => Ok(()),
        None if idempotent == Some(false) => usage("idempotence, not --idempotent off".to_owned()),
        None => Ok(()),
    }
}

/// What became of the lines after the committed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// No transaction held them when the run stopped, or it was aborted.
    NotCommitted,
    /// Their transaction was aborted: it will never be visible.
    Aborted,
    /// A commit may have gone through: its outcome is unknown.
    Uncertain,
}

/// The transactions of one run.
#[derive(Debug)]
pub struct Transactions {
    /// Lines per transaction; `None`: the whole input is one.
    size: Option<u64>,
    /// Lines read before the open transaction began; `None` while none is
    /// open.
    open_after: Option<u64>,
    /// Lines 1 to `committed` are committed.
    committed: u64,
    /// Transactions committed.
    count: u64,
    fate: Fate,
    /// Why the open transaction could not be aborted, for the report.
    abort_error: Option<String>,
}

impl Transactions {
    /// A run committing every `size` lines (all input if `None`).
    pub fn new(size: Option<u64>) -> Self {
        Self {
            size,
            open_after: None,
            committed: 0,
            count: 0,
            fate: Fate::NotCommitted,
            abort_error: None,
        }
    }

    /// Opens a transaction unless one is open; `read` lines were read
    /// before it.
    pub fn begin_if_closed(&mut self, producer: &Producer, read: u64) -> CliResult {
        if self.open_after.is_none() {
            producer.begin_transaction()?;
            self.open_after = Some(read);
        }
        Ok(())
    }

    /// Whether the open transaction holds its `--transaction-size` lines
    /// once `read` lines are read.
    pub fn is_full(&self, read: u64) -> bool {
        match (self.open_after, self.size) {
            (Some(after), Some(size)) => read - after >= size,
            _ => false,
        }
    }

    /// Commits the open transaction, if any, as holding lines up to `read`,
    /// within `limit`. A signal meanwhile does not stop the commit (what
    /// it committed must be known): it is returned, to stop the run
    /// after. A timeout of the library is retried, as its outcome is open.
    pub async fn commit(
        &mut self,
        producer: &Producer,
        signals: &mut Signals,
        read: u64,
        limit: Duration,
    ) -> CliResult<Option<Signal>> {
        if self.open_after.is_none() {
            return Ok(None);
        }
        let deadline = tokio::time::Instant::now() + limit;
        let commit = async {
            loop {
                match producer.commit_transaction().await {
                    Err(e)
                        if e.kind() == ErrorKind::Timeout
                            && tokio::time::Instant::now() < deadline =>
                    {
                        continue
                    }
                    r => return r,
                }
            }
        };
        tokio::pin!(commit);
        let mut signal = None;
        let committed = loop {
            tokio::select! {
                r = tokio::time::timeout_at(deadline, &mut commit) => break r,
                s = signals.recv(), if signal.is_none() => signal = Some(s),
            }
        };
        match committed {
            Ok(Ok(())) => {
                self.open_after = None;
                self.committed = read;
                self.count += 1;
                Ok(signal)
            }
            Ok(Err(e)) => {
                if e.kind() == ErrorKind::Timeout {
                    self.fate = Fate::Uncertain;
                }
                Err(CliError::msg(format!("committing the transaction: {e}")))
            }
            Err(_) => {
                self.fate = Fate::Uncertain;
                Err(CliError::msg(format!(
                    "committing the transaction timed out after {} ms",
                    limit.as_millis()
                )))
            }
        }
    }

    /// Aborts the open transaction, if any, within `limit` (a signal ends
    /// the wait). Failing that, the report says so; the coordinator aborts
    /// it after the transaction timeout, or when a producer with the same
    /// id starts.
    pub async fn abort(&mut self, producer: &Producer, signals: &mut Signals, limit: Duration) {
        if self.open_after.take().is_none() || self.fate == Fate::Uncertain {
            // Nothing open; or a commit may be under way, which an abort
            // cannot undo.
            return;
        }
        let aborted = tokio::select! {
            r = tokio::time::timeout(limit, producer.abort_transaction()) => match r {
                Ok(Ok(())) => Ok(()),
                // Fenced (or not authorised): the producer that fenced this
                // one has aborted the transaction, or there is none.
                Ok(Err(e)) if e.is_fatal() => return,
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("timed out after {} ms", limit.as_millis())),
            },
            s = signals.recv() => Err(format!("stopped by {}", s.name())),
        };
        match aborted {
            Ok(()) => self.fate = Fate::Aborted,
            Err(e) => self.abort_error = Some(e),
        }
    }

    /// E.g. `200 of 250 lines read committed (lines 1-200 in 2
    /// transactions); lines from 201 on were not committed (transaction
    /// aborted)`.
    pub fn report(&self, read: u64) -> String {
        let c = self.committed;
        let mut s = format!("{c} of {read} lines read committed");
        if c > 0 {
            let plural = if self.count == 1 { "" } else { "s" };
            s += &format!(" (lines 1-{c} in {} transaction{plural})", self.count);
        }
        s += &format!("; lines from {} on were ", c + 1);
        s += match self.fate {
            Fate::Aborted => "not committed (transaction aborted)",
            Fate::NotCommitted => "not committed",
            Fate::Uncertain => "not, or not certainly, committed",
        };
        if let Some(e) = &self.abort_error {
            s += &format!(
                " (the open transaction was not aborted: {e}; the broker aborts it after \
                 the transaction timeout)"
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(text: &str) -> Properties {
        Properties::parse(text).unwrap()
    }

    #[test]
    fn transactions_need_acks_all_and_idempotence_however_set() {
        let none = props("");
        assert!(check_settings(Acks::All, None, &none).is_ok());
        assert!(check_settings(Acks::All, Some(true), &none).is_ok());
        for (acks, idempotent, p) in [
            (Acks::Leader, None, props("")),
            (Acks::None, None, props("")),
            (Acks::All, Some(false), props("")),
            (Acks::All, None, props("acks=1")),
            (Acks::All, None, props("enable.idempotence=FALSE")),
        ] {
            let e = check_settings(acks, idempotent, &p).unwrap_err();
            assert!(matches!(e, CliError::Usage(_)), "{e}");
            assert!(
                e.to_string().starts_with("--transactional-id requires "),
                "{e}"
            );
        }
        // -X overrides the flags, in both directions.
        assert!(check_settings(Acks::Leader, None, &props("acks=all")).is_ok());
        let on = props("enable.idempotence=true");
        assert!(check_settings(Acks::All, Some(false), &on).is_ok());
    }

    #[test]
    fn a_transaction_is_full_at_its_size() {
        let mut t = Transactions::new(Some(3));
        assert!(!t.is_full(10), "nothing open");
        t.open_after = Some(4);
        assert!(!t.is_full(6));
        assert!(t.is_full(7));
        let mut all = Transactions::new(None);
        all.open_after = Some(0);
        assert!(!all.is_full(u64::MAX));
    }

    #[test]
    fn report_says_what_was_committed_and_what_became_of_the_rest() {
        let mut t = Transactions::new(Some(100));
        assert_eq!(
            t.report(0),
            "0 of 0 lines read committed; lines from 1 on were not committed"
        );
        t.committed = 200;
        t.count = 2;
        t.fate = Fate::Aborted;
        assert_eq!(
            t.report(250),
            "200 of 250 lines read committed (lines 1-200 in 2 transactions); \
             lines from 201 on were not committed (transaction aborted)"
        );
        t.count = 1;
        t.fate = Fate::Uncertain;
        assert_eq!(
            t.report(250),
            "200 of 250 lines read committed (lines 1-200 in 1 transaction); \
             lines from 201 on were not, or not certainly, committed"
        );
        t.fate = Fate::NotCommitted;
        t.abort_error = Some("stopped by SIGINT".into());
        assert!(t.report(250).ends_with(
            "were not committed (the open transaction was not aborted: stopped by SIGINT; \
             the broker aborts it after the transaction timeout)"
        ));
    }
}
