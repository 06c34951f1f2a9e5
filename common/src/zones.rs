//! Zones (issue 18, part 2): named polygons over a job's frames, given at
//! submit (`--zone door=x1,y1,x2,y2,x3,y3,...`) or added to a running job
//! (`panoptes zone add`). A tracked object is in a zone when the middle of
//! its box's bottom edge (where it stands) is inside the polygon.
use serde::{Deserialize, Serialize};

/// The most corners a zone may have.
pub const MAX_POINTS: usize = 64;
/// The most zones a job may have.
pub const MAX_ZONES: usize = 32;

/// A named polygon, in frame pixels or in fractions of the frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    pub name: String,
    pub points: Vec<[f64; 2]>,
    /// Every coordinate was at most 1: fractions of the frame's width and
    /// height (0,0 top left; 1,1 bottom right). Otherwise frame pixels.
    pub fractions: bool,
}

impl Zone {
    /// Parse `NAME=x1,y1,x2,y2,x3,y3[,...]`: at least three corners, each
    /// coordinate a number from 0; all at most 1 means fractions of the
    /// frame, otherwise pixels of the analysed frame.
    pub fn parse(text: &str) -> Result<Zone, String> {
        let example = "e.g. door=0.1,0.2,0.4,0.2,0.4,0.9,0.1,0.9 (fractions of the frame) or gate=0,400,640,400,640,480,0,480 (pixels)";
        let (name, coords) = text.trim().split_once('=').ok_or_else(|| format!("zone '{text}' has no '=': write NAME=x1,y1,x2,y2,x3,y3, {example}"))?;
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("zone name '{name}': use 1-64 letters, digits, '-' and '_' ({example})"));
        }
        let nums = coords
            .split(',')
            .map(|c| {
                let c = c.trim();
                c.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| format!("zone {name}: '{c}' is not a number ({example})"))
            })
            .collect::<Result<Vec<f64>, String>>()?;
        if nums.len() % 2 != 0 {
            return Err(format!("zone {name}: {} numbers do not make x,y pairs ({example})", nums.len()));
        }
        let points: Vec<[f64; 2]> = nums.chunks(2).map(|p| [p[0], p[1]]).collect();
        if points.len() < 3 {
            return Err(format!("zone {name} has {} corner(s): a polygon needs at least 3 ({example})", points.len()));
        }
        if points.len() > MAX_POINTS {
            return Err(format!("zone {name} has {} corners: at most {MAX_POINTS}", points.len()));
        }
        if let Some(v) = nums.iter().find(|v| **v < 0.0) {
            return Err(format!("zone {name}: {v} is out of range: coordinates start at 0 (the frame's top left corner)"));
        }
        if let Some(v) = nums.iter().find(|v| **v > 100_000.0) {
            return Err(format!("zone {name}: {v} is out of range: no frame is that large"));
        }
        let fractions = nums.iter().all(|v| *v <= 1.0);
        if !fractions {
            if let Some(v) = nums.iter().find(|v| v.fract() != 0.0 && **v < 1.0) {
                return Err(format!(
                    "zone {name} mixes fractions ({v}) with pixels: give every coordinate as a fraction of the frame (0-1) or every one in pixels"
                ));
            }
        }
        let zone = Zone { name: name.to_string(), points, fractions };
        if zone.area() <= 0.0 {
            return Err(format!("zone {name} has no area: its corners lie on one line"));
        }
        Ok(zone)
    }

    /// The zone as given: `NAME=x1,y1,...`.
    pub fn text(&self) -> String {
        let coords: Vec<String> = self.points.iter().flat_map(|p| [p[0].to_string(), p[1].to_string()]).collect();
        format!("{}={}", self.name, coords.join(","))
    }

    fn area(&self) -> f64 {
        let n = self.points.len();
        let twice: f64 = (0..n).map(|i| {
            let (a, b) = (self.points[i], self.points[(i + 1) % n]);
            a[0] * b[1] - b[0] * a[1]
        }).sum();
        twice.abs() / 2.0
    }

    /// Pixel zones that reach past a `width`×`height` frame: what to say.
    pub fn beyond(&self, width: u32, height: u32) -> Option<String> {
        if self.fractions || width == 0 || height == 0 {
            return None;
        }
        let p = self.points.iter().find(|p| p[0] > width as f64 || p[1] > height as f64)?;
        Some(format!("zone {} has corner ({}, {}) outside the {width}x{height} frame: give pixels inside it, or fractions (0-1)", self.name, p[0], p[1]))
    }

    /// What turns the corners into pixels of a frame of `size`: (×x, ×y);
    /// `None` for a zone in fractions while the size is not known.
    pub fn scale(&self, size: Option<(u32, u32)>) -> Option<(f64, f64)> {
        match (self.fractions, size) {
            (false, _) => Some((1.0, 1.0)),
            (true, Some((w, h))) if w > 0 && h > 0 => Some((w as f64, h as f64)),
            (true, _) => None,
        }
    }

    /// Whether the point (pixels) is inside, for a frame of `size` (needed
    /// for a zone in fractions; `None`: not known yet, so nothing is inside).
    pub fn contains(&self, x: f64, y: f64, size: Option<(u32, u32)>) -> bool {
        let Some((sx, sy)) = self.scale(size) else { return false };
        // On an edge counts as inside (a box standing on the frame's bottom
        // edge is in a zone drawn down to it); otherwise ray casting: count
        // the edges crossed by a ray to the right.
        let n = self.points.len();
        let mut inside = false;
        for i in 0..n {
            let (a, b) = (self.points[i], self.points[(i + n - 1) % n]);
            let (ax, ay, bx, by) = (a[0] * sx, a[1] * sy, b[0] * sx, b[1] * sy);
            let cross = (bx - ax) * (y - ay) - (by - ay) * (x - ax);
            let within = x >= ax.min(bx) - 1e-9 && x <= ax.max(bx) + 1e-9 && y >= ay.min(by) - 1e-9 && y <= ay.max(by) + 1e-9;
            if within && cross.abs() <= 1e-9 * (1.0 + (bx - ax).abs() + (by - ay).abs()) {
                return true;
            }
            if (ay > y) != (by > y) && x < (bx - ax) * (y - ay) / (by - ay) + ax {
                inside = !inside;
            }
        }
        inside
    }
}

/// A zone of a job, in force from an analysed frame on: zones given at
/// submit from frame 0, a zone added to a running job from the first frame
/// its analytics had not reached when the addition was recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobZone {
    pub zone: Zone,
    pub from_frame: u64,
}

/// Check a job's zones together: each parses (done by the caller), names
/// are unique, at most [`MAX_ZONES`].
pub fn check_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(format!("two zones are named '{n}': give each its own name"));
        }
    }
    if seen.len() > MAX_ZONES {
        return Err(format!("{} zones: a job has at most {MAX_ZONES}", seen.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_parse_in_fractions_or_pixels_and_bad_ones_say_why() {
        let z = Zone::parse("door=0.1,0.2,0.4,0.2,0.4,0.9").unwrap();
        assert!(z.fractions);
        assert_eq!(z.points, vec![[0.1, 0.2], [0.4, 0.2], [0.4, 0.9]]);
        assert_eq!(Zone::parse(&z.text()).unwrap(), z);
        assert!(!Zone::parse("gate = 0,400, 640,400, 640,480, 0,480").unwrap().fractions);
        for (bad, says) in [
            ("door", "no '='"),
            ("=0,0,1,0,1,1", "zone name"),
            ("door=0,0,1,1", "at least 3"),
            ("door=0,0,1,0,1", "pairs"),
            ("door=0,0,1,x,1,1", "not a number"),
            ("door=0,0,-5,0,1,1", "out of range"),
            ("door=0,0,0.5,0,640,480", "mixes fractions"),
            ("door=0,0,1,1,0.5,0.5", "no area"),
        ] {
            let e = Zone::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(check_names(["a", "b", "a"]).unwrap_err().contains("two zones"));
        assert!(Zone::parse("gate=0,0,700,0,700,10").unwrap().beyond(640, 480).unwrap().contains("outside the 640x480"));
        assert!(Zone::parse("gate=0,0,600,0,600,10").unwrap().beyond(640, 480).is_none());
    }

    #[test]
    fn points_inside_a_polygon() {
        // An L shape in pixels.
        let l = Zone::parse("l=0,0,10,0,10,5,5,5,5,10,0,10").unwrap();
        assert!(l.contains(2.0, 2.0, None));
        assert!(l.contains(2.0, 8.0, None));
        assert!(!l.contains(8.0, 8.0, None), "the L's missing corner");
        assert!(!l.contains(11.0, 2.0, None));
        assert!(l.contains(3.0, 10.0, None) && l.contains(10.0, 2.0, None), "on an edge is inside");
        assert!(!l.contains(7.0, 10.0, None), "but not on the line beyond the edge");
        // Fractions need the frame's size.
        let f = Zone::parse("f=0.5,0,1,0,1,1,0.5,1").unwrap();
        assert!(!f.contains(300.0, 10.0, None));
        assert!(f.contains(300.0, 10.0, Some((400, 100))));
        assert!(!f.contains(100.0, 10.0, Some((400, 100))));
    }
}
