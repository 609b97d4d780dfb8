//! The progress of a long command's phases (the benchmark, the fault run):
//! on a terminal a live line per phase (indicatif: a spinner, the elapsed
//! time, a count when the phase has one), and when the output is a file or
//! a pipe a plain line every [`PLAIN_EVERY`], so a log shows the run is
//! alive and how far it got.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a phase says where it is when the output is not a terminal.
pub const PLAIN_EVERY: Duration = Duration::from_secs(15);
/// How often the live line is redrawn on a terminal.
const TICK: Duration = Duration::from_millis(200);

/// One phase; its line goes away when it is dropped.
pub struct Phase {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Phase {
    /// A phase without a count: its name and the time it has taken.
    pub fn start(name: &str) -> Self {
        Self::new(name, None)
    }

    /// A phase that counts `done` up to `total` (read from the counter the
    /// work itself keeps).
    pub fn counting(name: &str, total: u64, done: Arc<AtomicUsize>) -> Self {
        Self::new(name, Some((total, done)))
    }

    fn new(name: &str, count: Option<(u64, Arc<AtomicUsize>)>) -> Self {
        let live = std::io::stderr().is_terminal();
        let bar = if live {
            let template = match count {
                Some(_) => "{spinner} {prefix} [{elapsed_precise}] {bar:30} {pos}/{len}",
                None => "{spinner} {prefix} [{elapsed_precise}]",
            };
            let bar = ProgressBar::new(count.as_ref().map_or(0, |(total, _)| *total));
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.set_prefix(name.to_owned());
            bar.enable_steady_tick(TICK);
            bar
        } else {
            ProgressBar::hidden()
        };
        let ticker = {
            let (bar, name) = (bar.clone(), name.to_owned());
            let started = Instant::now();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(if live { TICK } else { PLAIN_EVERY }).await;
                    let done = count.as_ref().map(|(total, done)| {
                        let done = done.load(Ordering::Relaxed) as u64;
                        bar.set_position(done);
                        format!(", {done}/{total}")
                    });
                    if !live {
                        plain(&format!(
                            "   … {name}: {} s{}",
                            started.elapsed().as_secs(),
                            done.unwrap_or_default()
                        ));
                    }
                }
            })
        };
        Self { bar, ticker }
    }

    /// Prints `line` to standard output without tearing the live line.
    pub fn say(&self, line: &str) {
        self.bar.suspend(|| println!("{line}"));
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

#[allow(clippy::print_stderr)]
fn plain(line: &str) {
    eprintln!("{line}");
}
