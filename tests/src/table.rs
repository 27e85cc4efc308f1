//! The Markdown tables the benchmarks print: first column left-aligned, the others right-aligned, each as
//! wide as its widest cell.

/// Prints `header` and `rows` as a Markdown table on stdout.
pub fn print<const N: usize>(header: [&str; N], rows: &[[&str; N]]) {
    let mut width = header.map(|h| h.chars().count());
    for row in rows {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[&str; N]| {
        let parts: Vec<String> = cols
            .iter()
            .zip(width)
            .enumerate()
            .map(|(i, (c, w))| {
                let pad = " ".repeat(w.saturating_sub(c.chars().count()));
                if i == 0 {
                    format!("{c}{pad}")
                } else {
                    format!("{pad}{c}")
                }
            })
            .collect();
        println!("| {} |", parts.join(" | "));
    };
    line(&header);
    let dashes: Vec<String> = width.iter().map(|&w| "-".repeat(w)).collect();
    println!("|-{}-|", dashes.join("-|-"));
    for row in rows {
        line(row);
    }
}
