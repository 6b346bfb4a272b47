import { defineConfig } from "vitest/config";

// Unit tests run on jsdom; JSX is compiled by esbuild, so they need no Vite plugin.
export default defineConfig({
  esbuild: { jsx: "automatic" },
  test: { environment: "jsdom", include: ["src/**/*.test.{ts,tsx}"] },
});
