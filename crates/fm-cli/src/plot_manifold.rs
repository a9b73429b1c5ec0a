//! Points on a manifold as a flat picture: the sphere in Lambert's
//! cylindrical equal-area projection (areas, hence densities, are kept:
//! `x` = longitude in degrees, `y` = (180/π)·sin(latitude)), the torus as its
//! unrolled square of angles in degrees; a product by its first factor
//! (positions of `S² × S¹`).

use fm_core::manifold::ManifoldSpec;

/// The flat view of points given row-major in `spec`'s chart coordinates,
/// with a caption naming the projection; `None` when the manifold has no 2-D view.
pub fn planar_view(spec: &ManifoldSpec, chart: &[f32]) -> Option<(Vec<f32>, &'static str)> {
    let m = spec.build();
    let c = m.chart_dim();
    let (first, caption) = match spec {
        ManifoldSpec::Sphere(2) => (spec.clone(), "Lambert equal-area"),
        ManifoldSpec::Torus(2) => (spec.clone(), "unrolled, degrees"),
        ManifoldSpec::Product(f) => match f.first() {
            Some(s @ ManifoldSpec::Sphere(2)) => (s.clone(), "S² factor, Lambert equal-area"),
            Some(t @ ManifoldSpec::Torus(2)) => (t.clone(), "T² factor, degrees"),
            _ => return None,
        },
        _ => return None,
    };
    let sphere = matches!(first, ManifoldSpec::Sphere(2));
    let view = chart
        .chunks(c)
        .flat_map(|p| {
            let (x, y) = (p[0], p[1]);
            if sphere {
                [x, (180.0 / std::f32::consts::PI) * y.to_radians().sin()]
            } else {
                [x, y]
            }
        })
        .collect();
    Some((view, caption))
}

/// How a plot's title names `--data`: a file by its name alone (`csv:dir/airports.csv` → `airports.csv`).
pub fn data_label(data: &str) -> String {
    match data.strip_prefix("csv:") {
        Some(path) => std::path::Path::new(path)
            .file_name()
            .map_or_else(|| data.to_string(), |n| n.to_string_lossy().into_owned()),
        None => data.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sphere_view_keeps_longitude_and_maps_latitude_to_its_sine() {
        let s: ManifoldSpec = "sphere".parse().unwrap();
        let (v, _) = planar_view(&s, &[10.0, 30.0, -170.0, -90.0]).unwrap();
        let k = 180.0 / std::f32::consts::PI;
        assert_eq!(v[0], 10.0);
        assert!((v[1] - 0.5 * k).abs() < 1e-4 && (v[3] + k).abs() < 1e-4);
        let p: ManifoldSpec = "product:sphere+torus:1".parse().unwrap();
        let (v, _) = planar_view(&p, &[10.0, 0.0, 45.0, 20.0, 0.0, 90.0]).unwrap();
        assert_eq!(v.len(), 4);
        assert!(planar_view(&"sphere:3".parse().unwrap(), &[1.0, 0.0, 0.0, 0.0]).is_none());
        assert_eq!(data_label("csv:some/dir/airports.csv"), "airports.csv");
        assert_eq!(data_label("torus-mixture"), "torus-mixture");
    }
}
