import type { Sample } from "../stream";

export interface Series {
  label: string;
  className: string;
  value: (sample: Sample) => number | null;
}

interface Props {
  title: string;
  unit: string;
  samples: Sample[];
  series: Series[];
}

const WIDTH = 600;
const HEIGHT = 140;

/** The points of one series, scaled to the graph; gaps where it has no value. */
export function paths(samples: Sample[], value: Series["value"], top: number): string[] {
  const paths: string[] = [];
  let current = "";
  const step = samples.length > 1 ? WIDTH / (samples.length - 1) : 0;
  samples.forEach((sample, i) => {
    const v = value(sample);
    if (v === null) {
      if (current) paths.push(current);
      current = "";
      return;
    }
    const x = (i * step).toFixed(1);
    const y = (HEIGHT - (v / top) * (HEIGHT - 10)).toFixed(1);
    current += `${current ? "L" : "M"}${x},${y}`;
  });
  if (current) paths.push(current);
  return paths;
}

/** A small line graph of the last samples, newest on the right. */
export function LineGraph({ title, unit, samples, series }: Props) {
  const values = samples.flatMap((s) => series.map((line) => line.value(s) ?? 0));
  const top = Math.max(1, ...values) * 1.1;
  const latest = samples[samples.length - 1];
  return (
    <figure className="graph">
      <figcaption>
        {title}
        {series.map((line) => (
          <span key={line.label} className={`legend ${line.className}`}>
            {line.label} {latest ? formatValue(line.value(latest)) : "–"} {unit}
          </span>
        ))}
      </figcaption>
      <svg viewBox={`0 0 ${WIDTH} ${HEIGHT}`} preserveAspectRatio="none" role="img" aria-label={title}>
        <line x1="0" y1={HEIGHT - 0.5} x2={WIDTH} y2={HEIGHT - 0.5} className="axis" />
        {series.map((line) =>
          paths(samples, line.value, top).map((d, i) => <path key={`${line.label}${i}`} d={d} className={line.className} />),
        )}
      </svg>
      <div className="scale dim">
        max {formatValue(top / 1.1)} {unit} · last {samples.length} s
      </div>
    </figure>
  );
}

function formatValue(v: number | null): string {
  if (v === null) return "–";
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}
