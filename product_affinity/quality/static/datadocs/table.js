/* The part of bootstrap-table that Great Expectations' Data Docs need to show their tables, with no network:
   $(table).bootstrapTable({columns, data, rowAttributes, rowStyle}) draws the header and one row per item, cells as
   the HTML Great Expectations rendered; a row with data-href opens it on click. Method calls (filters, search) do
   nothing: there are no filter controls. Written for this product (product_affinity.quality.offline_docs). */
(function ($) {
  function resolve(f) { return typeof f === "string" ? window[f] : f; }
  $.fn.bootstrapTable = function (options) {
    if (typeof options !== "object") return this;  // 'clearFilterControl', 'resetSearch', ...
    var columns = options.columns || [], rows = options.data || [];
    var rowAttributes = resolve(options.rowAttributes), rowStyle = resolve(options.rowStyle);
    return this.each(function () {
      var table = $(this).addClass("table table-hover").empty();
      var head = $("<tr>");
      columns.forEach(function (c) { head.append($("<th>").html(c.title || "").css("text-align", c.align || "")); });
      table.append($("<thead>").append(head));
      var body = $("<tbody>");
      rows.forEach(function (row, i) {
        var tr = $("<tr>");
        if (rowAttributes) $.each(rowAttributes(row, i) || {}, function (k, v) { tr.attr(k, v); });
        if (rowStyle) tr.css((rowStyle(row, i) || {}).css || {});
        columns.forEach(function (c) { tr.append($("<td>").html(row[c.field] == null ? "" : String(row[c.field])).css("text-align", c.align || "")); });
        body.append(tr);
      });
      table.append(body);
      body.on("click", "tr[data-href]", function (event) {
        if (!$(event.target).closest("a").length) window.location = $(this).attr("data-href");
      });
    });
  };
})(jQuery);
