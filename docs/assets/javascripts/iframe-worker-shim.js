/* Search on a site opened from the file system, with no network.
 *
 * Material's search runs in a Web Worker, and browsers refuse to start a Worker from a file:// URL.
 * Material's offline plugin therefore loads a shim from unpkg.com, which an offline reader cannot
 * reach. This file stands in for it (the plugin skips its own when a polyfill named iframe-worker is
 * configured): on file:// it replaces `Worker` with one that runs the worker's script in a hidden
 * iframe and passes messages both ways. Served over http(s), it does nothing.
 */
(function () {
  "use strict";
  if (location.protocol !== "file:") return;

  class IFrameWorker extends EventTarget {
    constructor(url) {
      super();
      this.onmessage = null;
      this.onerror = null;
      this.queue = [];
      this.iframe = document.createElement("iframe");
      this.iframe.hidden = true;
      document.documentElement.appendChild(this.iframe);
      const scope = this.iframe.contentWindow;
      // The worker's global postMessage answers the page; importScripts loads scripts in order.
      scope.postMessage = (data) => this.deliver(data);
      scope.importScripts = (...urls) => urls.reduce((done, src) => done.then(() => load(scope, src)), Promise.resolve());
      load(scope, new URL(url, location.href).href).then(
        () => { const waiting = this.queue; this.queue = null; waiting.forEach((data) => this.postMessage(data)); },
        (error) => this.fail(error),
      );
    }

    postMessage(data) {
      if (this.queue) { this.queue.push(data); return; }
      const scope = this.iframe.contentWindow;
      setTimeout(() => scope.dispatchEvent(new scope.MessageEvent("message", { data })));
    }

    terminate() { this.iframe.remove(); }

    deliver(data) {
      const event = new MessageEvent("message", { data });
      setTimeout(() => { this.dispatchEvent(event); if (this.onmessage) this.onmessage(event); });
    }

    fail(error) {
      const event = new ErrorEvent("error", { message: String(error) });
      this.dispatchEvent(event);
      if (this.onerror) this.onerror(event);
    }
  }

  function load(scope, src) {
    return new Promise((resolve, reject) => {
      const script = scope.document.createElement("script");
      script.src = src;
      script.onload = resolve;
      script.onerror = () => reject(new Error(`cannot load ${src}`));
      scope.document.head.appendChild(script);
    });
  }

  window.IFrameWorker = IFrameWorker;
  window.Worker = IFrameWorker;
})();
