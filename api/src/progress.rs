//! Progress of long CLI work (`prices export`, `prices utxoracle`, `migrate`) on stderr: an
//! indicatif bar on a terminal, plain `progress:` lines at most every few seconds otherwise,
//! nothing with `--no-progress`. Standard output is never touched, so scripts reading a
//! command's result line see the same output as before.
//!
//! While a bar is drawn, log lines go through [`LogWriter`], which clears the bar, writes the
//! line and redraws it.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A redrawn bar (stderr is a terminal).
    Bar,
    /// Periodic plain lines (stderr is a file or a pipe).
    Plain,
    /// Nothing.
    Off,
}

static MODE: OnceLock<Mode> = OnceLock::new();
/// The bar being drawn, for [`LogWriter`].
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Least time between two plain lines.
const PLAIN_INTERVAL: Duration = Duration::from_secs(2);

/// Sets the mode once for the process (`--no-progress` gives `false`).
pub fn init(enabled: bool) {
    let mode = if !enabled {
        Mode::Off
    } else if std::io::stderr().is_terminal() {
        Mode::Bar
    } else {
        Mode::Plain
    };
    let _ = MODE.set(mode);
}

fn mode() -> Mode {
    *MODE.get_or_init(|| {
        if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Plain
        }
    })
}

/// One task's progress: a stage (label, unit, total when known), a position and a message.
pub struct Progress {
    task: String,
    stage: String,
    unit: &'static str,
    total: Option<u64>,
    pos: u64,
    message: String,
    started: Instant,
    last_line: Option<Instant>,
    bar: Option<ProgressBar>,
    mode: Mode,
}

impl Progress {
    /// Starts `task` in its first stage.
    pub fn start(task: &str, stage: &str, unit: &'static str, total: Option<u64>) -> Self {
        Self::with_mode(mode(), task, stage, unit, total)
    }

    fn with_mode(
        mode: Mode,
        task: &str,
        stage: &str,
        unit: &'static str,
        total: Option<u64>,
    ) -> Self {
        let mut p = Progress {
            task: task.to_string(),
            stage: String::new(),
            unit,
            total: None,
            pos: 0,
            message: String::new(),
            started: Instant::now(),
            last_line: None,
            bar: None,
            mode,
        };
        if mode == Mode::Bar {
            p.bar = Some(ProgressBar::hidden());
        }
        p.stage(stage, unit, total);
        // Drawn only once styled.
        if let Some(bar) = &p.bar {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.enable_steady_tick(Duration::from_millis(200));
            if let Ok(mut active) = ACTIVE.lock() {
                *active = Some(bar.clone());
            }
        }
        p
    }

    /// Moves to a new stage, its position back at zero.
    pub fn stage(&mut self, stage: &str, unit: &'static str, total: Option<u64>) {
        self.stage = stage.to_string();
        self.unit = unit;
        self.total = total;
        self.pos = 0;
        self.message.clear();
        if let Some(bar) = &self.bar {
            // Short enough for an 80-column terminal (the user just typed the command).
            let template = match total {
                Some(_) => format!(
                    "{{spinner}} {{prefix}} [{{bar:20}}] {{pos}}/{{len}} {unit} {{percent}}% eta {{eta}} {{msg}}"
                ),
                None => format!("{{spinner}} {{prefix}} {{pos}} {unit} {{msg}}"),
            };
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(stage.to_string());
            bar.set_length(total.unwrap_or(0));
            bar.set_position(0);
            bar.set_message("");
        }
        self.line(true);
    }

    /// Changes the total of the current stage (an estimate that grew).
    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    /// Sets the position.
    pub fn set(&mut self, pos: u64) {
        self.pos = pos;
        if let Some(bar) = &self.bar {
            bar.set_position(pos);
        }
        self.line(false);
    }

    /// Advances the position by `n`.
    pub fn inc(&mut self, n: u64) {
        self.set(self.pos + n);
    }

    /// A short note shown after the counts (e.g. the current block height).
    pub fn message(&mut self, msg: impl Into<String>) {
        self.message = msg.into();
        if let Some(bar) = &self.bar {
            bar.set_message(self.message.clone());
        }
    }

    /// Ends the task with a summary line.
    pub fn finish(mut self, summary: &str) {
        let took = self.started.elapsed().as_secs_f64();
        match self.mode {
            Mode::Bar => self.clear_bar(),
            Mode::Plain => {}
            Mode::Off => return,
        }
        eprintln!("progress: {}: done, {summary} in {took:.1}s", self.task);
    }

    fn clear_bar(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            if let Ok(mut active) = ACTIVE.lock() {
                *active = None;
            }
        }
    }

    /// A plain line: the first of a stage always, then at most every [`PLAIN_INTERVAL`].
    fn line(&mut self, force: bool) {
        if self.mode != Mode::Plain {
            return;
        }
        if !force && self.last_line.is_some_and(|t| t.elapsed() < PLAIN_INTERVAL) {
            return;
        }
        self.last_line = Some(Instant::now());
        eprintln!("{}", self.plain_line());
    }

    fn plain_line(&self) -> String {
        let counts = match self.total {
            Some(total) if total > 0 => format!(
                "{}/{} {} ({}%)",
                self.pos,
                total,
                self.unit,
                (self.pos.min(total) * 100) / total
            ),
            Some(total) => format!("{}/{} {}", self.pos, total, self.unit),
            None => format!("{} {}", self.pos, self.unit),
        };
        let mut line = format!("progress: {}: {}: {counts}", self.task, self.stage);
        if !self.message.is_empty() {
            line.push_str(", ");
            line.push_str(&self.message);
        }
        line
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // An error path: take the bar away so the error line is readable.
        self.clear_bar();
    }
}

/// The log writer of the CLI: stderr, with the active bar (if any) suspended around each
/// line.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = ACTIVE.lock().ok().and_then(|a| a.clone());
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_name_task_stage_counts_and_message() {
        let mut p = Progress::with_mode(Mode::Off, "prices export", "rows", "rows", Some(200));
        p.mode = Mode::Plain;
        p.pos = 50;
        assert_eq!(
            p.plain_line(),
            "progress: prices export: rows: 50/200 rows (25%)"
        );
        p.stage("fetching blocks", "blocks", None);
        p.pos = 7;
        p.message = "height 870000".into();
        assert_eq!(
            p.plain_line(),
            "progress: prices export: fetching blocks: 7 blocks, height 870000"
        );
        p.total = Some(0);
        p.message.clear();
        assert_eq!(
            p.plain_line(),
            "progress: prices export: fetching blocks: 7/0 blocks"
        );
    }
}
