import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The node serves the built files itself (build.rs passes --outDir); `npm run dev` serves them
// from Vite and proxies the stream to a node's HTTP port given in KV_NODE (default 127.0.0.1:8201).
export default defineConfig({
  plugins: [react()],
  build: { sourcemap: false },
  server: {
    proxy: {
      "/console/ws": { target: `http://${process.env.KV_NODE ?? "127.0.0.1:8201"}`, ws: true },
    },
  },
});
