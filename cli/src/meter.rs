//! A progress line on stderr (count and rate) for long `produce` and
//! `consume` runs, shown only to a person watching: stderr must be a
//! terminal, never a pipe or a file that a script reads.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

/// How often the line is redrawn; also how long a run goes before it
/// shows (short runs print nothing).
const EVERY: Duration = Duration::from_secs(1);

/// Progress of one run, redrawn at most once per [`EVERY`]; the final
/// count is drawn when it is dropped.
pub struct Meter {
    /// What is counted, plural ("lines", "records").
    what: &'static str,
    count: u64,
    started: Instant,
    next: Instant,
    shown: bool,
    on: bool,
}

impl Meter {
    /// For `produce`: on when stderr is a terminal and the input is not
    /// typed there (the line would be drawn over what is being typed).
    pub fn for_produce(from_stdin: bool) -> Self {
        let typed = from_stdin && std::io::stdin().is_terminal();
        Self::new("lines", std::io::stderr().is_terminal() && !typed)
    }

    /// For `consume`: on when stderr is a terminal and the records go
    /// elsewhere (on the terminal they show the progress themselves, and a
    /// line between them would garble them).
    pub fn for_consume() -> Self {
        Self::new(
            "records",
            std::io::stderr().is_terminal() && !std::io::stdout().is_terminal(),
        )
    }

    fn new(what: &'static str, on: bool) -> Self {
        let started = Instant::now();
        Self {
            what,
            count: 0,
            started,
            next: started + EVERY,
            shown: false,
            on,
        }
    }

    /// Notes that `count` items are done; redraws the line when due.
    pub fn update(&mut self, count: u64) {
        self.count = count;
        if !self.on {
            return;
        }
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + EVERY;
        self.shown = true;
        let line = self.line(now);
        // \r and "erase to the end of the line": the line is redrawn in place.
        let _ = write!(std::io::stderr().lock(), "\r{line}\x1b[K");
    }

    fn line(&self, now: Instant) -> String {
        let count = self.count;
        let secs = now.duration_since(self.started).as_secs_f64();
        let rate = if secs > 0.0 { count as f64 / secs } else { 0.0 };
        format!("{count} {} in {secs:.0} s, {rate:.0}/s", self.what)
    }
}

impl Drop for Meter {
    /// Ends the line with the final count, if it was shown at all.
    fn drop(&mut self) {
        if self.shown {
            let line = self.line(Instant::now());
            let _ = writeln!(std::io::stderr().lock(), "\r{line}\x1b[K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_gives_count_time_and_rate() {
        let mut m = Meter::new("lines", false);
        m.update(5000);
        let line = m.line(m.started + Duration::from_secs(2));
        assert_eq!(line, "5000 lines in 2 s, 2500/s");
    }

    #[test]
    fn off_it_never_shows() {
        let mut m = Meter::new("records", false);
        m.next = m.started;
        m.update(10);
        assert!(!m.shown);
    }
}
