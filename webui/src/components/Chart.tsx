// Time-series charts drawn by uPlot (canvas), sized to their container.
import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface Series {
  label: string;
  /** One value per x; null leaves a gap. */
  values: (number | null)[];
  color: string;
}

export const PALETTE = ["#1d4e89", "#d1495b", "#00798c", "#edae49", "#66a182", "#8d6a9f", "#2e4057"];

interface ChartProps {
  /** Unix seconds. */
  x: number[];
  series: Series[];
  height?: number;
  /** Accessible description of what the chart shows. */
  title: string;
  yLabel?: string;
}

/** A line chart of several series over time, with a legend. */
export function TimeChart({ x, series, height = 260, title, yLabel }: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const opts: uPlot.Options = {
      width: Math.max(el.clientWidth, 200),
      height,
      series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 1.5, spanGaps: false }))],
      axes: [{}, { label: yLabel, size: 60 }],
      scales: { x: { time: true } },
      cursor: { drag: { x: true, y: false } },
    };
    const plot = new uPlot(opts, [x, ...series.map((s) => s.values)] as uPlot.AlignedData, el);
    const resize = new ResizeObserver(() => plot.setSize({ width: Math.max(el.clientWidth, 200), height }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [x, series, height, yLabel]);
  return <div ref={box} className="chart" role="img" aria-label={title} />;
}

interface SparkProps {
  values: number[];
  /** Failed points are drawn in red under the line. */
  failed?: boolean[];
  label: string;
  width?: number;
  height?: number;
}

/** A tiny chart without axes, for tables. */
export function Sparkline({ values, failed, label, width = 120, height = 28 }: SparkProps) {
  const box = useRef<HTMLSpanElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el || values.length === 0) return;
    const xs = values.map((_, i) => i);
    const bad = failed ? values.map((v, i) => (failed[i] ? v : null)) : values.map(() => null);
    const plot = new uPlot(
      {
        width,
        height,
        legend: { show: false },
        cursor: { show: false },
        axes: [{ show: false }, { show: false }],
        scales: { x: { time: false } },
        series: [
          {},
          { stroke: "#1d4e89", width: 1, points: { show: false } },
          { stroke: "#d1495b", width: 0, points: { show: true, size: 4, fill: "#d1495b" } },
        ],
      },
      [xs, values, bad] as uPlot.AlignedData,
      el,
    );
    return () => plot.destroy();
  }, [values, failed, width, height]);
  if (values.length === 0) return <span className="muted">no data</span>;
  return <span ref={box} className="spark" role="img" aria-label={label} />;
}
