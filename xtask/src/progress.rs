//! Progress for long steps that print nothing of their own (image imports, waiting for pods):
//! on a terminal a spinner with the elapsed time and the step's latest status; in a log (CI) each
//! new status on its own line, and a heartbeat line every 15 s so a slow step never looks hung.

use std::{
    io::{IsTerminal as _, Write as _},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::step::step;

const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const HEARTBEAT: Duration = Duration::from_secs(15);

/// What a step reports while it runs.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    status: Arc<Mutex<String>>,
}

impl Progress {
    /// Replaces the status line ("3/6 pods ready").
    pub fn set(&self, status: impl Into<String>) {
        if let Ok(mut s) = self.status.lock() {
            *s = status.into();
        }
    }

    fn get(&self) -> String {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// [`step`] with a spinner (terminal) or status lines (log) while `body` runs.
pub fn step_with_progress<T>(
    name: &str,
    body: impl FnOnce(&Progress) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    step(name, || {
        let progress = Progress::default();
        let done = Arc::new(AtomicBool::new(false));
        let tty = std::io::stderr().is_terminal();
        let drawer = {
            let (progress, done) = (progress.clone(), done.clone());
            std::thread::spawn(move || draw(&progress, &done, tty))
        };
        let out = body(&progress);
        done.store(true, Ordering::Release);
        let _ = drawer.join();
        out
    })
}

fn draw(progress: &Progress, done: &AtomicBool, tty: bool) {
    let start = Instant::now();
    let mut last_status = String::new();
    let mut last_line = Instant::now();
    let mut frame = 0;
    while !done.load(Ordering::Acquire) {
        let status = progress.get();
        if tty {
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r\x1b[2K    {} {:>4.0}s  {status}",
                FRAMES[frame % FRAMES.len()],
                start.elapsed().as_secs_f64()
            );
            let _ = err.flush();
            frame += 1;
        } else if status != last_status && !status.is_empty() {
            eprintln!("    {status}");
            last_status = status;
            last_line = Instant::now();
        } else if last_line.elapsed() >= HEARTBEAT {
            eprintln!("    … {:.0}s", start.elapsed().as_secs_f64());
            last_line = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if tty {
        // Leave the last status behind, without the spinner.
        let status = progress.get();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K");
        if !status.is_empty() {
            let _ = writeln!(err, "    {status}");
        }
        let _ = err.flush();
    }
}
