"""A stand-in bluetoothd for fieldgate's BLE radio: python-dbusmock's `bluez5` template,
extended with what a scanning client (btleplug through bluez-async) meets on a real
BlueZ and the template leaves out or gets differently.

Load it with `python -m dbusmock --template tests/peers/bluez/bluez_scanner.py` on the
bus named by DBUS_SYSTEM_BUS_ADDRESS. On top of `bluez5` it provides:

- `org.bluez.Mock.Advertise(adapter, address, address_type, name, rssi, service_data,
  manufacturer_data)`: what bluetoothd does when it hears an advertisement while
  discovering. A new address becomes a Device1 object (`InterfacesAdded` with its
  properties); a known one gets one `PropertiesChanged` with RSSI, ServiceData and
  ManufacturerData, sent even when unchanged (discovery runs with DuplicateData).
  Refused unless the adapter is discovering, as a real adapter hears nothing then.
- `org.bluez.Mock.SetPowered(adapter, powered)`: the adapter's Powered property.
- Device properties typed as BlueZ types them: ServiceData `a{sv}` and ManufacturerData
  `a{qv}` dictionaries of byte arrays, left out when empty; no Name when the device
  sent none, and then an Alias made of the address with dashes (bluetoothd's rule).
- StartDiscovery refused with `org.bluez.Error.NotReady` on a powered-off adapter;
  SetDiscoveryFilter kept (the test reads it back from the call log, `GetCalls`).
"""

# SPDX-License-Identifier: Apache-2.0

import dbus

from dbusmock import OBJECT_MANAGER_IFACE, mockobject
from dbusmock.templates import bluez5
from dbusmock.templates.bluez5 import *  # noqa: F401,F403 (the template's methods and load())

BUS_NAME = bluez5.BUS_NAME
MAIN_OBJ = bluez5.MAIN_OBJ
SYSTEM_BUS = True
IS_OBJECT_MANAGER = True

ADAPTER_IFACE = bluez5.ADAPTER_IFACE
DEVICE_IFACE = bluez5.DEVICE_IFACE
MOCK_IFACE = bluez5.BLUEZ_MOCK_IFACE


def _changed(obj, interface, props):
    obj.EmitSignal(dbus.PROPERTIES_IFACE, "PropertiesChanged", "sa{sv}as", [interface, props, []])


def _bytes(data):
    return dbus.Array([dbus.Byte(int(b)) for b in data], signature="y", variant_level=1)


def _service_data(data):
    return dbus.Dictionary({dbus.String(str(k)): _bytes(v) for k, v in data.items()}, signature="sv")


def _manufacturer_data(data):
    return dbus.Dictionary({dbus.UInt16(int(k)): _bytes(v) for k, v in data.items()}, signature="qv")


def _start_discovery(adapter):
    props = adapter.props[ADAPTER_IFACE]
    if not props["Powered"]:
        raise dbus.exceptions.DBusException("Resource Not Ready", name="org.bluez.Error.NotReady")
    props["Discovering"] = dbus.Boolean(True)
    _changed(adapter, ADAPTER_IFACE, {"Discovering": dbus.Boolean(True, variant_level=1)})


def _stop_discovery(adapter):
    props = adapter.props[ADAPTER_IFACE]
    if not props["Discovering"]:
        raise dbus.exceptions.DBusException("No discovery started", name="org.bluez.Error.Failed")
    props["Discovering"] = dbus.Boolean(False)
    _changed(adapter, ADAPTER_IFACE, {"Discovering": dbus.Boolean(False, variant_level=1)})


def _set_discovery_filter(adapter, discovery_filter):
    adapter.discovery_filter = discovery_filter


@dbus.service.method(MOCK_IFACE, in_signature="ss", out_signature="s")
def AddAdapter(self, device_name, system_name):
    """bluez5's AddAdapter, with discovery as a real adapter does it."""
    path = bluez5.AddAdapter(self, device_name, system_name)
    adapter = mockobject.objects[path]
    adapter.discovery_filter = None
    adapter.AddMethods(
        ADAPTER_IFACE,
        [
            ("StartDiscovery", "", "", _start_discovery),
            ("StopDiscovery", "", "", _stop_discovery),
            ("SetDiscoveryFilter", "a{sv}", "", _set_discovery_filter),
        ],
    )
    return path


@dbus.service.method(MOCK_IFACE, in_signature="sb", out_signature="")
def SetPowered(self, device_name, powered):
    """Powers the adapter on or off (bluetoothctl power on|off)."""
    adapter = _adapter(device_name)
    props = adapter.props[ADAPTER_IFACE]
    props["Powered"] = dbus.Boolean(powered)
    changes = {"Powered": dbus.Boolean(powered, variant_level=1)}
    if not powered and props["Discovering"]:
        props["Discovering"] = dbus.Boolean(False)
        changes["Discovering"] = dbus.Boolean(False, variant_level=1)
    _changed(adapter, ADAPTER_IFACE, changes)


def _adapter(device_name):
    path = "/org/bluez/" + device_name
    if path not in mockobject.objects:
        raise dbus.exceptions.DBusException(
            f"Adapter {device_name} does not exist.", name=MOCK_IFACE + ".NoSuchAdapter"
        )
    return mockobject.objects[path]


@dbus.service.method(MOCK_IFACE, in_signature="ssssna{say}a{qay}", out_signature="s")
def Advertise(self, device_name, address, address_type, name, rssi, service_data, manufacturer_data):
    """One advertisement heard by adapter `device_name` (see the module comment).

    `name` empty: the advertisement carries no local name. Returns the device's path.
    """
    adapter = _adapter(device_name)
    if not adapter.props[ADAPTER_IFACE]["Discovering"]:
        raise dbus.exceptions.DBusException(
            f"{device_name} is not discovering", name=MOCK_IFACE + ".NotDiscovering"
        )
    address = str(address).upper()
    path = adapter.path + "/dev_" + address.replace(":", "_")
    changed = {"RSSI": dbus.Int16(rssi, variant_level=1)}
    if service_data:
        changed["ServiceData"] = dbus.Dictionary(_service_data(service_data), signature="sv", variant_level=1)
    if manufacturer_data:
        changed["ManufacturerData"] = dbus.Dictionary(
            _manufacturer_data(manufacturer_data), signature="qv", variant_level=1
        )
    if path in mockobject.objects:
        device = mockobject.objects[path]
        for key, value in changed.items():
            device.props[DEVICE_IFACE][key] = value
        if name and device.props[DEVICE_IFACE].get("Name") != name:
            changed["Name"] = dbus.String(name, variant_level=1)
            changed["Alias"] = dbus.String(name, variant_level=1)
            device.props[DEVICE_IFACE]["Name"] = dbus.String(name)
            device.props[DEVICE_IFACE]["Alias"] = dbus.String(name)
        _changed(device, DEVICE_IFACE, changed)
        return path

    props = {
        "Address": dbus.String(address),
        "AddressType": dbus.String(address_type or "public"),
        "Alias": dbus.String(name or address.replace(":", "-")),
        "Paired": dbus.Boolean(False),
        "Bonded": dbus.Boolean(False),
        "Trusted": dbus.Boolean(False),
        "Blocked": dbus.Boolean(False),
        "LegacyPairing": dbus.Boolean(False),
        "Connected": dbus.Boolean(False),
        "UUIDs": dbus.Array([], signature="s"),
        "Adapter": dbus.ObjectPath(adapter.path),
        "ServicesResolved": dbus.Boolean(False),
        "RSSI": dbus.Int16(rssi),
    }
    if name:
        props["Name"] = dbus.String(name)
    if service_data:
        props["ServiceData"] = _service_data(service_data)
    if manufacturer_data:
        props["ManufacturerData"] = _manufacturer_data(manufacturer_data)
    adapter.AddObject(
        path,
        DEVICE_IFACE,
        props,
        [
            ("Connect", "", "", ""),
            ("Disconnect", "", "", ""),
        ],
    )
    mockobject.objects["/"].EmitSignal(
        OBJECT_MANAGER_IFACE,
        "InterfacesAdded",
        "oa{sa{sv}}",
        [dbus.ObjectPath(path), {DEVICE_IFACE: props}],
    )
    return path
