//! What the outputs show, shared between the device (which updates it on SET_SCANOUT,
//! RESOURCE_FLUSH and the cursor commands) and the threads that show it (PNG snapshots, the
//! VNC server). Pixels are `0x00RRGGBB`. Changes are recorded in a bounded damage log with
//! sequence numbers, so each viewer asks for what changed since it last looked and gets the
//! whole output again if it fell behind the log.

use super::protocol::Rect;
use epf_epc::sync;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Damage entries kept; a viewer further behind gets a full update.
const DAMAGE_LOG: usize = 256;
/// Cursor images are this many pixels square (the spec's cursor resources are 64x64).
pub const CURSOR_SIZE: u32 = 64;

/// One output's picture.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    /// `width * height` pixels, `0x00RRGGBB`, rows packed.
    pub pixels: Vec<u32>,
    /// Whether a resource is scanned out (a disabled output shows black).
    pub enabled: bool,
}

/// The cursor as the driver last set it.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    pub scanout: u32,
    pub x: u32,
    pub y: u32,
    pub hot_x: u32,
    pub hot_y: u32,
    /// 64x64 `0xAARRGGBB` pixels, or `None` when hidden.
    pub image: Option<Vec<u32>>,
    /// Bumped on every cursor change, for viewers.
    pub serial: u64,
}

/// Everything a viewer reads.
#[derive(Debug, Default)]
pub struct DisplayState {
    pub frames: Vec<Frame>,
    pub cursor: Cursor,
    /// Sequence number of the latest change.
    pub seq: u64,
    /// `(seq, output, rect)` of recent changes; a whole-output change has the output's
    /// full rectangle.
    damage: VecDeque<(u64, usize, Rect)>,
}

impl DisplayState {
    /// Records that `rect` of `output` changed.
    pub fn damage(&mut self, output: usize, rect: Rect) {
        self.seq += 1;
        if self.damage.len() == DAMAGE_LOG {
            self.damage.pop_front();
        }
        self.damage.push_back((self.seq, output, rect));
    }

    /// The rectangles of `output` changed after `since`, or `None` if the log no longer
    /// reaches back that far (the viewer must redraw everything).
    pub fn damage_since(&self, output: usize, since: u64) -> Option<Vec<Rect>> {
        if since >= self.seq {
            return Some(Vec::new());
        }
        match self.damage.front() {
            Some(&(first, _, _)) if first <= since + 1 => {}
            _ => return None,
        }
        Some(
            self.damage
                .iter()
                .filter(|&&(s, o, _)| s > since && o == output)
                .map(|&(_, _, r)| r)
                .collect(),
        )
    }
}

/// The shared display: state plus a condition variable viewers wait on for changes.
#[derive(Debug, Default)]
pub struct Display {
    state: Mutex<DisplayState>,
    changed: Condvar,
}

impl Display {
    /// A display of `outputs` outputs, each `width` x `height` and black until scanned out.
    pub fn new(outputs: usize, width: u32, height: u32) -> Display {
        let frames = (0..outputs)
            .map(|_| Frame {
                width,
                height,
                pixels: vec![0; width as usize * height as usize],
                enabled: false,
            })
            .collect();
        Display {
            state: Mutex::new(DisplayState {
                frames,
                ..DisplayState::default()
            }),
            changed: Condvar::new(),
        }
    }

    /// Locks the state.
    pub fn lock(&self) -> MutexGuard<'_, DisplayState> {
        sync::lock(&self.state)
    }

    /// Wakes the viewers after a change.
    pub fn notify(&self) {
        self.changed.notify_all();
    }

    /// Waits up to `timeout` until `ready` holds for the state (checked now, after every
    /// change and every [`Display::notify`]); returns the state either way.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut ready: impl FnMut(&DisplayState) -> bool,
    ) -> MutexGuard<'_, DisplayState> {
        let g = self.lock();
        match self.changed.wait_timeout_while(g, timeout, |s| !ready(s)) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        }
    }

    /// A copy of output `i`'s frame.
    pub fn frame(&self, i: usize) -> Option<Frame> {
        self.lock().frames.get(i).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_get_damage_since_or_a_full_redraw() {
        let d = Display::new(2, 8, 8);
        let r = |x| Rect {
            x,
            y: 0,
            width: 1,
            height: 1,
        };
        let mut s = d.lock();
        s.damage(0, r(1));
        s.damage(1, r(2));
        s.damage(0, r(3));
        assert_eq!(s.damage_since(0, 0), Some(vec![r(1), r(3)]));
        assert_eq!(s.damage_since(0, 1), Some(vec![r(3)]));
        assert_eq!(s.damage_since(1, 0), Some(vec![r(2)]));
        assert_eq!(s.damage_since(0, 3), Some(vec![]));
        for _ in 0..DAMAGE_LOG {
            s.damage(1, r(4));
        }
        assert_eq!(s.damage_since(0, 1), None, "fell behind the log");
    }
}
