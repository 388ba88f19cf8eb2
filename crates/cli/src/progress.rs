//! Progress of long work (a pull, an unpack, an ext4 build): a spinner or a byte bar on a
//! terminal, plain `nestbox: …` lines on stderr elsewhere.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use nestbox_image::UnpackProgress;
use nestbox_image::registry::PullProgress;

/// How often a spinner turns.
const TICK: Duration = Duration::from_millis(120);

/// The progress display of one command.
#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    /// What the bar shows (`pulling layer …`, `unpacking layer …`), so each new one restarts it.
    layer: Arc<Mutex<Option<String>>>,
}

impl Progress {
    /// A display for stderr: animated on a terminal, lines elsewhere.
    pub fn new() -> Self {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.enable_steady_tick(TICK);
            bar
        });
        Self { bar, layer: Arc::new(Mutex::new(None)) }
    }

    /// A new phase of the work.
    pub fn phase(&self, what: &str) {
        *self.layer.lock().unwrap_or_else(PoisonError::into_inner) = None;
        match &self.bar {
            Some(bar) => {
                bar.set_style(ProgressStyle::default_spinner());
                bar.set_length(0);
                bar.set_message(what.to_owned());
            }
            None => eprintln!("nestbox: {what}"),
        }
    }

    /// Bytes of a layer being pulled.
    pub fn layer(&self, p: &PullProgress) {
        let short = &p.layer.hex()[..12];
        self.bytes(format!("pulling layer {short}"), format!("pulled layer {short}"), p.done, p.total);
    }

    /// Bytes of a layer file (a blob, a tarball) being unpacked.
    pub fn unpacking(&self, p: &UnpackProgress) {
        let short = match p.layer.strip_prefix("sha256:") {
            Some(hex) => hex.get(..12).unwrap_or(hex),
            None => std::path::Path::new(&p.layer).file_name().and_then(|n| n.to_str()).unwrap_or(&p.layer),
        };
        self.bytes(format!("unpacking layer {short}"), format!("unpacked layer {short}"), p.done, p.total);
    }

    /// `done` of `total` bytes of a transfer (`what`: "exporting snapshot …").
    pub fn transfer(&self, what: &str, done: u64, total: u64) {
        self.bytes(what.to_owned(), format!("{what}: done"), done, total);
    }

    /// `done` of `total` bytes of `what`: a byte bar on a terminal, else the line `did` when
    /// it is done.
    fn bytes(&self, what: String, did: String, done: u64, total: u64) {
        let mut current = self.layer.lock().unwrap_or_else(PoisonError::into_inner);
        let new_layer = current.as_deref() != Some(what.as_str());
        match &self.bar {
            Some(bar) => {
                if new_layer {
                    let style = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar());
                    bar.set_style(style.progress_chars("=> "));
                    bar.set_length(total);
                    bar.set_message(what.clone());
                }
                bar.set_position(done);
            }
            None if done == total => {
                // Once per thing, however often its end is reported.
                let finished = format!("{what} (finished)");
                if current.as_deref() != Some(finished.as_str()) {
                    eprintln!("nestbox: {did} ({} MiB)", total.div_ceil(1 << 20));
                }
                *current = Some(finished);
                return;
            }
            None => {}
        }
        *current = Some(what);
    }

    /// Ends the display.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
