// gpuhub-gpu: this server's GPU in JupyterLab's status bar, and the idle-GPU warning.
// Hand-written in the form of a webpack module-federation container (what JupyterLab loads
// for a prebuilt extension: init(shareScope), get(module) -> factory), so the image needs no
// Node build. It takes JupyterLab's own shared modules (status bar, notifications, server
// connection) from the share scope. It asks <base>/gpuhub/gpu (the server extension in
// gpuhub_gpu/__init__.py) every 15 s while the page is visible (every 5 s while warned). A parked
// server (docs/gpus.md, "Parking") cannot answer: the hub does, 503 with {message, parked_since,
// resume_url}, shown as a banner with a Resume button (and in JupyterLab's notification list).
var _JUPYTERLAB;
(function () {
  'use strict';
  var scope = null;

  function shared(name) {
    var versions = scope && scope[name];
    if (!versions) { return Promise.resolve(null); }
    var keys = Object.keys(versions);
    var pick = keys.filter(function (k) { return versions[k].loaded; })[0] || keys[keys.length - 1];
    return Promise.resolve(versions[pick].get()).then(function (factory) { return factory(); });
  }

  function gib(mib) { return (mib / 1024).toFixed(1); }

  function minutes(seconds) {
    var m = Math.floor(seconds / 60), s = Math.floor(seconds % 60);
    return m + ':' + (s < 10 ? '0' : '') + s;
  }

  function plugin(apputils, statusbar, services, coreutils, widgets) {
    var Notification = apputils.Notification;
    return {
      id: 'gpuhub-gpu:status',
      description: "This server's GPU and the idle-GPU warning",
      autoStart: true,
      optional: [statusbar.IStatusBar],
      activate: function (app, statusBar) {
        var settings = services.ServerConnection.makeSettings();
        var url = coreutils.URLExt.join(settings.baseUrl, 'gpuhub/gpu');
        var item = new widgets.Widget();
        item.addClass('jp-StatusBar-TextItem');
        item.addClass('gpuhub-gpu-item');
        item.node.textContent = '';
        if (statusBar) {
          statusBar.registerStatusItem('gpuhub-gpu:status', { item: item, align: 'left', rank: 4 });
        }
        var noteId = null, timer = null, answered = false, parkedId = null;

        // The notice of a parked server is a banner of this extension's own, besides the entry in
        // JupyterLab's notification list: JupyterLab loads its toasts' code (a chunk of its own)
        // from the server at the first toast, and a parked server cannot serve it, so a toast
        // never shows then (only the bell's count).
        var banner = null;
        function showBanner(d) {
          if (banner === null) {
            banner = document.createElement('div');
            banner.className = 'gpuhub-parked-banner';
            banner.setAttribute('role', 'alert');
            banner.style.cssText = 'position:fixed;right:12px;bottom:36px;z-index:10000;max-width:440px;' +
              'padding:12px 14px;background:var(--jp-layout-color1);color:var(--jp-ui-font-color1);' +
              'border-left:4px solid var(--jp-brand-color1);box-shadow:var(--jp-elevation-z4);' +
              'font-family:var(--jp-ui-font-family);font-size:var(--jp-ui-font-size1)';
            var text = document.createElement('p');
            text.style.margin = '0 0 8px 0';
            var resume = document.createElement('a');
            resume.textContent = 'Resume';
            resume.title = 'Put the kernels back on the GPU';
            resume.style.cssText = 'display:inline-block;padding:4px 14px;border-radius:2px;text-decoration:none;' +
              'background:var(--jp-brand-color1);color:var(--jp-ui-inverse-font-color1);font-weight:600';
            banner.appendChild(text);
            banner.appendChild(resume);
            document.body.appendChild(banner);
          }
          banner.firstChild.textContent = d.message;
          banner.lastChild.href = d.resume_url;
        }

        function parked(d) {
          item.node.textContent = 'GPU: parked';
          item.node.title = d.message;
          showBanner(d);
          if (parkedId === null) {
            parkedId = Notification.info(d.message, { autoClose: false, actions: [{
              label: 'Resume', caption: 'Put the kernels back on the GPU',
              callback: function () { window.location.href = d.resume_url; } }] });
          }
        }

        function unparked() {
          if (banner !== null) { banner.remove(); banner = null; }
          if (parkedId !== null) { Notification.dismiss(parkedId); parkedId = null; }
        }

        function stillWorking() {
          services.ServerConnection.makeRequest(url + '/still-working', { method: 'POST' }, settings)
            .then(function (r) { return r.json(); })
            .then(function (d) { answered = true; Notification.info(d.message || 'Noted.', { autoClose: 8000 }); })
            .catch(function () {});
        }

        function warn(gpu) {
          var left = gpu.warning.seconds_left;
          var idle = gpu.idle_seconds < 120 ? gpu.idle_seconds + ' seconds' : Math.round(gpu.idle_seconds / 60) + ' minutes';
          var message = 'Your GPU has been idle for ' + idle + '. This server stops in ' + minutes(left) +
            ' to give the GPU to others, unless the GPU is busy again. Your files are kept.';
          var actions = (gpu.warning.still_working || answered) ? [] :
            [{ label: 'Still working', caption: 'One more grace period; only GPU work keeps the server', callback: stillWorking }];
          if (noteId === null) {
            noteId = Notification.warning(message, { autoClose: false, actions: actions });
          } else {
            Notification.update({ id: noteId, message: message, type: 'warning', autoClose: false, actions: actions });
          }
        }

        // The user's own GPU-hours (the hub's usage store): against their tightest quota, or this week's.
        function usageText(u) {
          if (!u || !u.hours) { return ['', '']; }
          var q = u.quota;
          if (q) {
            var days = q.window_days >= 1 ? Math.round(q.window_days * 10) / 10 + ' d' : Math.round(q.window_days * 24) + ' h';
            return [q.used_hours.toFixed(1) + ' / ' + q.hours + ' GPU-h (' + days + ')',
              'GPU-hours used: ' + q.used_hours.toFixed(2) + ' of ' + q.hours + ' per ' + q.text.split(' per ')[1] +
              ' (' + q.scope + (q.name ? ' ' + q.name : '') + ' quota)' + (q.renews_at_iso ? '; renews ' + q.renews_at_iso : '')];
          }
          return [u.hours.week.toFixed(1) + ' GPU-h this week', 'GPU-hours used: ' + u.hours.day.toFixed(2) +
            ' today, ' + u.hours.week.toFixed(2) + ' in 7 days, ' + u.hours.month.toFixed(2) + ' in 30 days (no quota)'];
        }

        function show(data) {
          var gpu = data.gpu, usage = usageText(data.usage);
          if (!gpu) {
            item.node.textContent = usage[0] ? 'GPU-hours: ' + usage[0] : '';
            item.node.title = usage[1];
            return;
          }
          var g = gpu.gpu, parts = [];
          parts.push(g.utilization_pct === null ? 'n/a' : g.utilization_pct + '%');
          if (g.memory_used_mib !== null && g.memory_total_mib) {
            parts.push(gib(g.memory_used_mib) + ' / ' + gib(g.memory_total_mib) + ' GiB');
          }
          if (gpu.idle_seconds >= 60) { parts.push('idle ' + Math.round(gpu.idle_seconds / 60) + ' min'); }
          if (usage[0]) { parts.push(usage[0]); }
          item.node.textContent = 'GPU: ' + parts.join(' · ') + (gpu.warning ? ' ⚠' : '');
          item.node.title = (g.name || 'GPU') + ' ' + g.uuid + (gpu.warning ? ' (idle: stops in ' + minutes(gpu.warning.seconds_left) + ')' : '') +
            (usage[1] ? '\n' + usage[1] : '');
          if (gpu.warning) {
            warn(gpu);
          } else if (noteId !== null) {
            Notification.dismiss(noteId);
            noteId = null;
            answered = false;
          }
        }

        // Every 15 s; every 5 s while warned; sooner when a warning is due before then.
        function nextPoll(d) {
          var gpu = d.gpu;
          if (!gpu) { return 15000; }
          if (gpu.warning) { return 5000; }
          var policy = gpu.policy || d.policy;  // this server's profile's policy, if it has one
          var timeout = d.enabled && !d.exempt && policy ? policy.timeout_s : 0;
          if (timeout && gpu.idle_since !== null) {
            return Math.min(15000, Math.max(2000, (timeout - gpu.idle_seconds) * 1000));
          }
          return 15000;
        }

        function poll() {
          clearTimeout(timer);
          if (document.hidden) { timer = setTimeout(poll, 15000); return; }
          services.ServerConnection.makeRequest(url, {}, settings)
            .then(function (r) {
              if (r.status === 503) { return r.json().catch(function () { return { gpu: null }; }); }
              return r.ok ? r.json() : { gpu: null };
            })
            .then(function (d) {
              if (d.parked_since) { parked(d); return { gpu: null }; }
              unparked();
              show(d);
              return d;
            }, function () { return { gpu: null }; })
            .then(function (d) { timer = setTimeout(poll, nextPoll(d)); });
        }
        document.addEventListener('visibilitychange', function () { if (!document.hidden) { poll(); } });
        app.restored.then(poll);
      }
    };
  }

  _JUPYTERLAB = window._JUPYTERLAB = window._JUPYTERLAB || {};
  _JUPYTERLAB['gpuhub-gpu'] = {
    init: function (shareScope) { scope = shareScope; return Promise.resolve(); },
    get: function (module) {
      if (module !== './extension') {
        return Promise.reject(new Error('Module "' + module + '" does not exist in container.'));
      }
      return Promise.all(['@jupyterlab/apputils', '@jupyterlab/statusbar', '@jupyterlab/services',
                          '@jupyterlab/coreutils', '@lumino/widgets'].map(shared))
        .then(function (m) {
          var p = plugin(m[0], m[1], m[2], m[3], m[4]);
          return function () { return { __esModule: true, default: [p] }; };
        });
    }
  };
})();
