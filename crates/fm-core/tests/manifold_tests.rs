//! The geometry of the manifolds against closed forms, the geodesic path, the
//! Riemannian divergence against finite differences in local coordinates, and
//! the whole likelihood against an exact change of variables.

use std::f64::consts::PI;

use candle::{DType, Device, Tensor};
use fm_core::divergence::{Divergence, Probe};
use fm_core::jacobian::JvpField;
use fm_core::manifold::{
    riemannian_divergence, riemannian_log_likelihood, sample_on_manifold, GeodesicPath, Manifold,
    ManifoldSpec, Retraction, Sphere,
};
use fm_core::scheduler::SchedulerKind;
use fm_core::{SeededRng, VelocityField};
use fm_solvers::{Midpoint, Rk4, TimeGrid};

fn specs() -> Vec<ManifoldSpec> {
    ["sphere", "sphere:1", "sphere:3", "torus:2", "euclidean:3", "product:sphere+torus:1+euclidean:2"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect()
}

fn tensor(v: Vec<f64>, n: usize) -> Tensor {
    let b = v.len() / n;
    Tensor::from_vec(v, (b, n), &Device::Cpu).unwrap()
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_vec2::<f64>().unwrap()
}

/// Random point pairs of `m`, `y` within `max_angle` of `x` on every compact factor.
fn pairs(m: &dyn Manifold, b: usize, seed: u64) -> (Tensor, Tensor) {
    let mut rng = SeededRng::new(seed);
    let x = m.sample_base(b, DType::F64, &mut rng).unwrap();
    let v =
        m.project_tangent(&x, &rng.normal((b, m.ambient_dim()), DType::F64, &Device::Cpu).unwrap()).unwrap();
    // Tangent steps of length < π/2 per sphere factor stay away from the cut locus.
    let y = m.exp(&x, &(v * 0.4).unwrap()).unwrap();
    (x, y)
}

#[test]
fn exp_of_log_is_the_identity_and_log_has_the_geodesic_distance_as_length() {
    for spec in specs() {
        let m = spec.build();
        assert_eq!((spec.ambient_dim(), spec.chart_dim()), (m.ambient_dim(), m.chart_dim()), "{spec}");
        let (x, y) = pairs(m.as_ref(), 200, 1);
        let v = m.log(&x, &y).unwrap();
        let back = m.exp(&x, &v).unwrap();
        let err = (back - &y).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(err < 1e-12, "{spec}: exp∘log error {err}");
        // log_x(y) is tangent at x, and |log_x(y)| = d(x, y).
        let tangent = m.project_tangent(&x, &v).unwrap();
        assert!(
            (tangent - &v).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap() < 1e-12
        );
        let d = m.distance(&x, &y).unwrap().to_vec1::<f64>().unwrap();
        let len: Vec<f64> = rows(&v).iter().map(|r| r.iter().map(|a| a * a).sum::<f64>().sqrt()).collect();
        for (a, b) in d.iter().zip(&len) {
            assert!((a - b).abs() < 1e-12, "{spec}: {a} vs {b}");
        }
        // Points stay on the manifold.
        let p = m.project(&y).unwrap();
        assert!((p - &y).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap() < 1e-14);
    }
}

#[test]
fn geodesic_distances_equal_their_closed_forms() {
    // S²: the great-circle angle acos(x·y), including antipodes (π) and equal points (0).
    let s2 = Sphere::new(2);
    let cases = [
        ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], PI / 2.0),
        ([1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], PI),
        ([0.0, 0.0, 1.0], [0.0, 0.0, 1.0], 0.0),
        ([0.6, 0.8, 0.0], [0.0, 0.6, 0.8], (0.48f64).acos()),
    ];
    for (x, y, d) in cases {
        assert!((s2.distance_point(&x, &y) - d).abs() < 1e-15, "{x:?} {y:?}");
    }
    // Tiny angles, where acos loses half the digits: atan2 keeps them.
    let e = 1e-9f64;
    assert!((s2.distance_point(&[1.0, 0.0, 0.0], &[e.cos(), e.sin(), 0.0]) - e).abs() < 1e-22);
    // T²: the wrapped angle differences, √(Δ₁² + Δ₂²); angles 350° and 10° are 20° apart.
    let t2: ManifoldSpec = "torus:2".parse().unwrap();
    let t2 = t2.build();
    let x = t2.embed(&[350.0, 0.0]).unwrap();
    let y = t2.embed(&[10.0, 90.0]).unwrap();
    let want = (20f64.to_radians().powi(2) + 90f64.to_radians().powi(2)).sqrt();
    assert!((t2.distance_point(&x, &y) - want).abs() < 1e-14);
    // S² × T¹ × R²: distances add in squares.
    let p: ManifoldSpec = "product:sphere+torus:1+euclidean:2".parse().unwrap();
    let p = p.build();
    let x = p.embed(&[0.0, 0.0, 0.0, 1.0, 2.0]).unwrap();
    let y = p.embed(&[90.0, 0.0, 180.0, 4.0, 6.0]).unwrap();
    let want = ((PI / 2.0).powi(2) + PI.powi(2) + 25.0).sqrt();
    assert!((p.distance_point(&x, &y) - want).abs() < 1e-14);
}

#[test]
fn charts_round_trip_and_place_known_cities() {
    let s2 = "sphere".parse::<ManifoldSpec>().unwrap().build();
    let pts = [-122.4, 37.8, 2.35, 48.86, 145.0, -37.8, 180.0, 0.0, 0.0, 90.0];
    let back = s2.chart(&s2.embed(&pts).unwrap()).unwrap();
    for (i, (a, b)) in pts.iter().zip(&back).enumerate() {
        // The pole's longitude is arbitrary; 180° comes back as 180°.
        if i != 8 {
            assert!((a - b).abs() < 1e-9, "{i}: {a} vs {b}");
        }
    }
    let torus = "torus:3".parse::<ManifoldSpec>().unwrap().build();
    let ang = [-170.0, 45.0, 179.5];
    let back = torus.chart(&torus.embed(&ang).unwrap()).unwrap();
    assert!(ang.iter().zip(&back).all(|(a, b)| (a - b).abs() < 1e-9), "{back:?}");
    let err = s2.embed(&[1.0, 2.0, 3.0]).unwrap_err().to_string();
    assert!(err.contains("points") && err.contains("3 values"), "{err}");
    let err = s2.embed(&[f64::NAN, 2.0]).unwrap_err().to_string();
    assert!(err.contains("row 0 column 0"), "{err}");
}

#[test]
fn specifications_parse_print_and_refuse_by_name() {
    let p = ManifoldSpec::with_chart_dim("product:sphere+torus", None).unwrap();
    assert_eq!(p.to_string(), "product:sphere:2+torus:1");
    assert_eq!(p.to_string().parse::<ManifoldSpec>().unwrap(), p);
    assert_eq!(ManifoldSpec::with_chart_dim("torus", Some(3)).unwrap(), ManifoldSpec::Torus(3));
    assert_eq!(ManifoldSpec::with_chart_dim("euclidean", Some(5)).unwrap(), ManifoldSpec::Euclidean(5));
    let m = ManifoldSpec::Torus(2).build();
    assert_eq!((m.dim(), m.ambient_dim(), m.chart_dim()), (2, 4, 2));
    for bad in ["cube", "sphere:0", "torus:x", "product:sphere", "sphere:99999"] {
        let err = bad.parse::<ManifoldSpec>().unwrap_err().to_string();
        assert!(err.contains("manifold") && err.contains(bad), "{bad}: {err}");
    }
    assert!(ManifoldSpec::with_chart_dim("torus", None).unwrap_err().to_string().contains("torus:2"));
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(serde_json::from_str::<ManifoldSpec>(&json).unwrap(), p);
}

#[test]
fn the_uniform_density_integrates_to_one() {
    // S²: ∫∫ p sinθ dθ dφ by the midpoint rule (exact up to the rule's O(h²) in θ).
    let s2 = Sphere::new(2);
    let (nt, np) = (2000, 400);
    let mut total = 0.0;
    for i in 0..nt {
        let th = (i as f64 + 0.5) * PI / nt as f64;
        for j in 0..np {
            let ph = (j as f64 + 0.5) * 2.0 * PI / np as f64;
            let x = [th.sin() * ph.cos(), th.sin() * ph.sin(), th.cos()];
            total +=
                s2.base_log_density_point(&x).exp() * th.sin() * (PI / nt as f64) * (2.0 * PI / np as f64);
        }
    }
    assert!((total - 1.0).abs() < 1e-6, "{total}");
    // The areas of S¹, S³, S⁴ against 2π, 2π², 8π²/3; T²'s density is (2π)⁻².
    assert!((Sphere::new(1).area() - 2.0 * PI).abs() < 1e-12);
    assert!((Sphere::new(3).area() - 2.0 * PI * PI).abs() < 1e-12);
    assert!((Sphere::new(4).area() - 8.0 * PI * PI / 3.0).abs() < 1e-12);
    let t2 = ManifoldSpec::Torus(2).build();
    assert!((t2.base_log_density_point(&[1.0, 0.0, 0.0, 1.0]) + 2.0 * (2.0 * PI).ln()).abs() < 1e-14);
    // The base sampler is uniform: the mean of z on S² is 0 and of z² is 1/3.
    let x = s2.sample_base(200_000, DType::F64, &mut SeededRng::new(2)).unwrap();
    let z: Vec<f64> = rows(&x).iter().map(|r| r[2]).collect();
    let (m1, m2) = (z.iter().sum::<f64>() / 2e5, z.iter().map(|v| v * v).sum::<f64>() / 2e5);
    assert!(m1.abs() < 5.0 * (1.0f64 / 3.0 / 2e5).sqrt() && (m2 - 1.0 / 3.0).abs() < 0.003, "{m1} {m2}");
}

#[test]
fn the_geodesic_path_stays_on_the_manifold_ends_at_its_points_and_has_its_derivative_as_target() {
    for spec in specs() {
        let m = spec.build();
        for sched in [SchedulerKind::CondOt, SchedulerKind::Cosine] {
            let path = GeodesicPath::new(sched).unwrap();
            let (x0, x1) = pairs(m.as_ref(), 64, 5);
            let b = 64;
            let at = |t: f64| {
                let tt = Tensor::full(t, b, &Device::Cpu).unwrap();
                path.sample(m.as_ref(), &x0, &x1, &tt).unwrap()
            };
            let max = |a: &Tensor, b: &Tensor| {
                (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap()
            };
            assert!(max(&at(0.0).x_t, &x0) < 1e-14, "{spec}");
            assert!(max(&at(1.0).x_t, &x1) < 1e-12, "{spec}");
            for t in [0.1, 0.5, 0.9] {
                let ps = at(t);
                assert!(max(&m.project(&ps.x_t).unwrap(), &ps.x_t) < 1e-14, "{spec} off the manifold");
                assert!(
                    max(&m.project_tangent(&ps.x_t, &ps.dx_t).unwrap(), &ps.dx_t) < 1e-12,
                    "{spec} not tangent"
                );
                // dx_t = central difference of x_t in t.
                let h = 1e-5;
                let fd = ((at(t + h).x_t - at(t - h).x_t).unwrap() / (2.0 * h)).unwrap();
                assert!(max(&fd, &ps.dx_t) < 1e-7, "{spec} {sched:?} t={t}: {}", max(&fd, &ps.dx_t));
            }
        }
    }
    let err = GeodesicPath::new(SchedulerKind::Vp { beta_min: 0.1, beta_max: 20.0 }).unwrap_err().to_string();
    assert!(err.contains("scheduler") && err.contains("κ₀ = 0"), "{err}");
}

/// `f(x, t)_i = sin((A x)_i) + t c_i`, with its forward-mode Jacobian–vector products.
struct SineField {
    a: Vec<[f64; 3]>,
    c: [f64; 3],
}

impl SineField {
    fn new() -> Self {
        Self { a: vec![[0.9, -0.4, 0.3], [0.2, 1.1, -0.7], [-0.5, 0.6, 0.8]], c: [0.3, -0.2, 0.5] }
    }
    fn eval(&self, x: &[f64], t: f64) -> [f64; 3] {
        std::array::from_fn(|i| (0..3).map(|j| self.a[i][j] * x[j]).sum::<f64>().sin() + t * self.c[i])
    }
}

impl VelocityField for SineField {
    fn velocity(&self, x: &Tensor, t: &Tensor) -> fm_core::Result<Tensor> {
        let (xs, ts) = (rows(x), t.to_vec1::<f64>()?);
        let v: Vec<f64> = xs.iter().zip(&ts).flat_map(|(r, &t)| self.eval(r, t)).collect();
        Ok(tensor(v, 3))
    }
}

impl JvpField for SineField {
    fn velocity_and_jvp(&self, x: &Tensor, t: &Tensor, v: &Tensor) -> fm_core::Result<(Tensor, Tensor)> {
        let xs = rows(x);
        let vs = v.to_vec3::<f64>()?;
        let mut out = Vec::new();
        for vk in &vs {
            for (r, vr) in xs.iter().zip(vk) {
                for i in 0..3 {
                    let z: f64 = (0..3).map(|j| self.a[i][j] * r[j]).sum();
                    let dz: f64 = (0..3).map(|j| self.a[i][j] * vr[j]).sum();
                    out.push(z.cos() * dz);
                }
            }
        }
        let jv = Tensor::from_vec(out, v.dims(), &Device::Cpu)?;
        Ok((self.velocity(x, t)?, jv))
    }
}

#[test]
fn the_riemannian_divergence_equals_finite_differences_in_spherical_coordinates() {
    let s2 = Sphere::new(2);
    let field = SineField::new();
    let t = 0.37;
    // V in the chart (θ polar, φ azimuth): V^θ = V·∂θp, V^φ = V·∂φp / sin²θ;
    // div V = (1/sinθ) ∂θ(sinθ V^θ) + ∂φ V^φ.
    let p = |th: f64, ph: f64| [th.sin() * ph.cos(), th.sin() * ph.sin(), th.cos()];
    let v_at = |th: f64, ph: f64| {
        let x = p(th, ph);
        let mut f = field.eval(&x, t).to_vec();
        s2.project_tangent_point(&x, &mut f);
        f
    };
    let comps = |th: f64, ph: f64| {
        let v = v_at(th, ph);
        let d_th = [th.cos() * ph.cos(), th.cos() * ph.sin(), -th.sin()];
        let d_ph = [-th.sin() * ph.sin(), th.sin() * ph.cos(), 0.0];
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        (dot(&v, &d_th), dot(&v, &d_ph) / th.sin().powi(2))
    };
    let mut pts = Vec::new();
    let mut fd = Vec::new();
    for &(th, ph) in &[(0.4, 0.3), (1.2, 2.5), (2.0, -1.0), (2.9, 4.0), (PI / 2.0, 0.0)] {
        let h = 1e-5;
        let d_theta =
            ((th + h).sin() * comps(th + h, ph).0 - (th - h).sin() * comps(th - h, ph).0) / (2.0 * h);
        let d_phi = (comps(th, ph + h).1 - comps(th, ph - h).1) / (2.0 * h);
        fd.push(d_theta / th.sin() + d_phi);
        pts.extend(p(th, ph));
    }
    let x = tensor(pts, 3);
    let (_, div) = riemannian_divergence(&s2, &field, &x, t, None).unwrap();
    let div = div.to_vec1::<f64>().unwrap();
    for (a, b) in div.iter().zip(&fd) {
        assert!((a - b).abs() < 1e-8, "exact {a} vs finite differences {b}");
    }
    // Hutchinson with many probes is unbiased for the same trace.
    let k = 20_000;
    let probes = Probe::Gaussian.draw(&mut SeededRng::new(7), (k, 5, 3), DType::F64, &Device::Cpu).unwrap();
    let (_, est) = riemannian_divergence(&s2, &field, &x, t, Some(&probes)).unwrap();
    for (a, b) in est.to_vec1::<f64>().unwrap().iter().zip(&div) {
        assert!((a - b).abs() < 0.05, "Hutchinson {a} vs exact {b}");
    }
}

/// `f ≡ a`: on S² the projected field `a − (a·x)x` moves the polar angle θ
/// from `a` by `θ̇ = −|a| sin θ`, so `tan(θ/2)` shrinks by `e^(−|a|t)`.
struct Constant([f64; 3]);

impl VelocityField for Constant {
    fn velocity(&self, x: &Tensor, _t: &Tensor) -> fm_core::Result<Tensor> {
        let b = x.dim(0)?;
        Ok(tensor((0..b).flat_map(|_| self.0).collect(), 3))
    }
}

impl JvpField for Constant {
    fn velocity_and_jvp(&self, x: &Tensor, t: &Tensor, v: &Tensor) -> fm_core::Result<(Tensor, Tensor)> {
        Ok((self.velocity(x, t)?, v.zeros_like()?))
    }
}

#[test]
fn the_likelihood_equals_the_exact_change_of_variables_of_a_polar_flow() {
    let s2 = Sphere::new(2);
    let c = 1.5;
    let field = Constant([0.0, 0.0, c]);
    // Points at polar angles θ₁ from the north pole (a = c·e_z).
    let thetas = [0.1, 0.5, 1.0, 1.6, 2.4, 3.0];
    let pts: Vec<f64> =
        thetas.iter().flat_map(|&th: &f64| [th.sin() * 0.6, th.sin() * 0.8, th.cos()]).collect();
    let x1 = tensor(pts, 3);
    let res = riemannian_log_likelihood(
        &s2,
        &field,
        &x1,
        Divergence::Exact,
        &Rk4,
        &TimeGrid::uniform(1.0, 0.0, 200).unwrap(),
        &mut SeededRng::new(0),
    )
    .unwrap();
    let lp = res.log_p.to_vec1::<f64>().unwrap();
    for (&th1, got) in thetas.iter().zip(&lp) {
        // θ₀ = 2 atan(e^c tan(θ₁/2)); p₁(θ₁) = p₀ · sinθ₀/sinθ₁ · dθ₀/dθ₁.
        let th0 = 2.0 * (c.exp() * (th1 / 2.0).tan()).atan();
        let dth = c.exp() / (th1 / 2.0).cos().powi(2) / (1.0 + (c.exp() * (th1 / 2.0).tan()).powi(2));
        let want = -(4.0 * PI).ln() + (th0.sin() / th1.sin() * dth).ln();
        assert!((got - want).abs() < 1e-8, "θ₁ = {th1}: {got} vs {want}");
    }
    assert_eq!(res.nfe, 800);
    // Sampling forward from the recovered x(0) lands back on x₁ (midpoint, projected steps).
    let sol = sample_on_manifold(
        &s2,
        &field,
        &res.x0,
        &Midpoint,
        &TimeGrid::uniform(0.0, 1.0, 400).unwrap(),
        Retraction::Exp,
        false,
    )
    .unwrap();
    let err = (sol.state - &x1).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
    assert!(err < 1e-4, "{err}");
    let bad = riemannian_log_likelihood(
        &s2,
        &field,
        &x1,
        Divergence::Exact,
        &Rk4,
        &TimeGrid::uniform(0.0, 1.0, 2).unwrap(),
        &mut SeededRng::new(0),
    )
    .unwrap_err()
    .to_string();
    assert!(bad.contains("grid"), "{bad}");
}
