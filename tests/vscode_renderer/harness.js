// Shows widget outputs through VS Code's own ipywidgets 8 renderer, against a real kernel.
//
// VS Code's Jupyter extension renders widgets in a notebook webview: a preload ES module
// (@vscode/jupyter-ipywidgets8, dist/ipywidgets.js) whose activate() installs
// window.vscIPyWidgets8; load() defines the widget packages for requirejs and publishes
// window.vscIPyWidgets.WidgetManager. The extension hands that manager a @jupyterlab/services
// KernelConnection whose socket is relayed over postMessage; here the connection's socket is
// the server's own websocket, which carries the same messages. Everything else (the manager,
// the widget models and views, their CSS) is VS Code's unmodified bundle.
//
// The page is opened as index.html?token=…&cell=…&cell=…: each `cell` is run in order, like a
// notebook's cells, and every widget view a cell displays is rendered below. The outcome is in
// <body data-harness="ready|failed"> and, on failure, in #harness-error.

// VS Code's widget webview loads these variables (widget sizes and colours) itself.
import '@jupyter-widgets/controls/css/labvariables.css';
import { KernelManager, KernelMessage, ServerConnection } from '@jupyterlab/services';

const WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json';

function log(message) {
  console.log(`[harness] ${message}`);
}

// VS Code's script loader fetches third-party widget modules through the extension. The panel
// uses only the modules the bundle defines itself, so a request for any other is a failure.
const scriptLoader = {
  widgetsRegisteredInRequireJs: new Set(),
  async loadWidgetScript(moduleName, moduleVersion) {
    throw new Error(`no source for widget module ${moduleName}@${moduleVersion}`);
  },
  successHandler(className, moduleName, moduleVersion) {
    log(`loaded ${moduleName}@${moduleVersion}:${className}`);
  },
  errorHandler(className, moduleName, moduleVersion, error) {
    console.error(`[harness] cannot load ${moduleName}@${moduleVersion}:${className}`, error);
  },
};

async function loadVSCodeRenderer() {
  // Loaded as a separate module, as VS Code loads its preload (not rebundled with this file).
  const preload = await import(new URL('ipywidgets.js', document.baseURI).href);
  preload.activate();
  window.vscIPyWidgets8.load();
  if (!window.vscIPyWidgets?.WidgetManager) {
    throw new Error('the renderer bundle did not publish window.vscIPyWidgets.WidgetManager');
  }
  return window.vscIPyWidgets.WidgetManager;
}

async function connect(token) {
  const settings = ServerConnection.makeSettings({
    baseUrl: `${location.origin}/`,
    wsUrl: `ws://${location.host}/`,
    token,
    appendToken: true, // the websocket has no login cookie to fall back on
  });
  const kernels = new KernelManager({ serverSettings: settings });
  await kernels.ready;
  const kernel = await kernels.startNew({ name: 'python3' });
  log(`kernel ${kernel.id} started`);
  return kernel;
}

// Runs one cell; resolves with the widget-view bundles it displayed once the kernel replied.
async function runCell(kernel, code) {
  const views = [];
  const future = kernel.requestExecute({ code, stop_on_error: true });
  future.onIOPub = (msg) => {
    if (KernelMessage.isDisplayDataMsg(msg) || KernelMessage.isExecuteResultMsg(msg)) {
      const view = msg.content.data[WIDGET_VIEW];
      if (view) {
        views.push(view);
      }
    } else if (KernelMessage.isStreamMsg(msg)) {
      log(`${msg.content.name}: ${msg.content.text.trimEnd()}`);
    } else if (KernelMessage.isErrorMsg(msg)) {
      console.error(`[harness] ${msg.content.traceback.join('\n')}`);
    }
  };
  const reply = await future.done;
  if (reply.content.status !== 'ok') {
    const { ename, evalue } = reply.content;
    throw new Error(`cell failed: ${ename ?? reply.content.status}: ${evalue ?? ''}\n${code}`);
  }
  return views;
}

// What VS Code's renderer does with a widget-view output: model, view, then attach.
async function show(manager, view, host) {
  if (view.version_major !== 2) {
    throw new Error(`widget view of protocol ${view.version_major}, expected 2`);
  }
  const node = document.createElement('div');
  node.className = 'cell-output-ipywidget-background';
  host.appendChild(node);
  const model = await manager.get_model(view.model_id);
  const widget = await manager.create_view(model, { el: node });
  await manager.display_view(view, widget, { node });
  log(`displayed ${model.get('_model_name')} ${view.model_id}`);
}

async function main() {
  const params = new URLSearchParams(location.search);
  const cells = params.getAll('cell');
  if (cells.length === 0) {
    throw new Error('no ?cell= to run');
  }
  const WidgetManager = await loadVSCodeRenderer();
  const kernel = await connect(params.get('token') ?? '');
  const host = document.getElementById('outputs');
  // The manager registers the jupyter.widget comm target, so it must exist before any cell runs.
  const manager = new WidgetManager(kernel, host, scriptLoader, log, undefined);
  let shown = 0;
  for (const code of cells) {
    for (const view of await runCell(kernel, code)) {
      await show(manager, view, host);
      shown += 1;
    }
  }
  if (shown === 0) {
    throw new Error('no cell displayed a widget');
  }
}

main().then(
  () => {
    document.body.dataset.harness = 'ready';
  },
  (error) => {
    console.error('[harness]', error);
    document.getElementById('harness-error').textContent = String(error?.stack ?? error);
    document.body.dataset.harness = 'failed';
  },
);
