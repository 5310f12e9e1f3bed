/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The console is served by apid (same origin as /api/v1). `npm run dev` proxies the API to
// an apid given in ROOKERY_APID (e.g. https://127.0.0.1:8443; its certificate is self-signed).
export default defineConfig({
  plugins: [react()],
  build: {
    outDir: "dist",
    // No inline scripts or styles: apid's CSP for the console is script-src/style-src 'self'.
    assetsInlineLimit: 0,
    sourcemap: false,
    chunkSizeWarningLimit: 1024,
  },
  server: {
    proxy: process.env.ROOKERY_APID
      ? { "/api": { target: process.env.ROOKERY_APID, secure: false, changeOrigin: true } }
      : undefined,
  },
  test: {
    include: ["src/**/*.test.{ts,tsx}"],
    environment: "jsdom",
  },
});
